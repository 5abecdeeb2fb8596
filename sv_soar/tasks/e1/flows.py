"""A built-in, seeded generator of IoT-23-style E1 flows, in SV-Bench's exact prompt format.

It gives the project an E1 problem set that needs no download (SV-Bench's full E1 set is a gated
Hugging Face dataset). Rows look like SV-Bench's:

    {"question": "Device unknown-device observed tcp 43750→23, duration ?, bytes ?, flags [S]. "
                 "Decide: Malicious or Benign (you may Abstain if unsure).",
     "answer": "Malicious",
     "meta": {"source": "sv-soar-builtin", "scenario": "S0", "attack_family": "PartOfAHorizontalPortScan",
              "hash": "...", "split": "train", "rule": "tcp-single-syn", "cue": "obvious"}}

Rendering follows SV-Bench's `scripts/data/build_e1_iot23.py` (`render_prompt`): ports as integers,
duration as the Zeek value (6 decimals) or "?" when absent or zero, bytes = orig_bytes + resp_bytes
or "?" when both are zero, flags = the Zeek `history` string ("[]" when there is none, as for ICMP).
`scenario` is the Zeek connection state implied by the history, `attack_family` an IoT-23
detailed label ("NA" for benign rows), `split` 70/15/15 from the hash, as SV-Bench splits.
Two keys SV-Bench does not have: `rule`, the decision-list rule below that labels the row, and
`cue`, "subtle" for rows whose surface looks like the other class.

Labels come from this decision list over what the prompt shows (first match wins). `classify_flow`
implements it, and every generated row is checked against it.

    rule                     proto  condition (first match wins)                                label
    icmp-flood               icmp   bytes >= 1000                                               Malicious
    icmp-ping                icmp   otherwise                                                   Benign
    udp-dns-oversized        udp    dport 53, bytes >= 512 (amplification, tunnel)              Malicious
    udp-service              udp    dport 53, 67, 123, 1900, 5353 (DNS, DHCP, NTP, SSDP, mDNS)  Benign
    udp-flood                udp    bytes >= 512 to any other port                              Malicious
    udp-other                udp    otherwise                                                   Benign
    tcp-c2-port              tcp    dport 6667, 6697, 4554, 1312, 48101, 62336 (IRC, Mirai)     Malicious
    tcp-exploit-port         tcp    dport 37215, 52869 (Okiru router exploits)                  Malicious
    tcp-midstream            tcp    no "S" in flags (OTH: session start not seen)               Benign
    tcp-rejected-probe       tcp    flags "Sr" (REJ)                                            Malicious
    tcp-single-syn           tcp    flags "S", duration ? (one SYN, never retried)              Malicious
    tcp-syn-retransmit       tcp    flags "S" with a duration (a stack retrying)                Benign
    tcp-telnet-session       tcp    dport 23 or 2323 after a handshake (brute force)            Malicious
    tcp-tls-tiny             tcp    dport 443 or 8883, bytes < 100 (no TLS handshake fits)      Malicious
    tcp-tls                  tcp    dport 443 or 8883                                           Benign
    tcp-http-large-download  tcp    dport 80 or 8080, bytes >= 20000 (malware binary)           Malicious
    tcp-session              tcp    otherwise                                                   Benign

What the generator draws (each template is one IoT-23 family; ? = shown as unknown, | = or;
scan ports: 23, 2323, 22, 81, 8080, 50, 21, 5555; SYN retries go to 23, 4975, 443, 1883, 80):

    template           family                     dport             state [flags]    bytes     duration
    Malicious, obvious:
    scan-syn           PartOfAHorizontalPortScan  23,2323,22,81,…   S0 [S]           ?         ?
    scan-rej           PartOfAHorizontalPortScan  same              REJ [Sr]         ?         <0.25 s
    ddos-udp           DDoS                       udp any           S0 [D]           512-90k   ? | <0.5 s
    ddos-icmp          DDoS                       icmp 8→0          OTH []           1k-65k    ? | <1 s
    ddos-syn           DDoS                       80                S0 [S]           ?         ?
    cc-irc             C&C                        6667, 6697        SF S1 S3 RSTR    60-3000   1-600 s
    cc-midstream       C&C                        62336, 48101      OTH [C]          ?         ?
    okiru-exploit      Okiru                      37215, 52869      SF | S0 [S]      300-1200  0.05-3 s
    telnet-bruteforce  Attack                     23, 2323          SF RSTO RSTR     20-700    0.5-40 s
    file-download      FileDownload               80, 8080          SF               20k-600k  0.3-20 s
    Malicious, subtle:
    heartbeat-tls      C&C-HeartBeat              443               SF S1 RSTO       1-99      0.02-2.5 s
    heartbeat-c2       C&C-HeartBeat              4554,1312,48101   SF               1-48      0.05-1.5 s
    dns-oversized      DDoS                       udp 53            S0 [D] | SF      512-8000  ? | <0.2 s
    scan-web           PartOfAHorizontalPortScan  80,443,8080,1883  S0 [S]           ?         ?
    Benign (family NA), obvious:
    dns                NA                         udp 53            SF [Dd]          60-200    <0.08 s
    dns-noanswer       NA                         udp 53            S0 [D]           28-120    ? | ~5.005 s
    ntp                NA                         udp 123           SF [Dd]          96        <0.4 s
    ssdp-mdns          NA                         udp 1900, 5353    S0 [D]           90-480    ? | 0.5-3.5 s
    https              NA                         443               SF S1 RSTO RSTR  600-60k   0.1-300 s
    http               NA                         80, 8080          SF RSTR          150-8000  0.02-5 s
    mqtt               NA                         1883, 8883        S1 SF            100-6000  10-900 s
    ping               NA                         icmp 8→0          OTH []           8-128     ? | <0.3 s
    udp-app            NA                         udp any high      S0 [D] | SF      40-500    0.5-120 s
    Benign, subtle:
    syn-retransmit     NA                         23,4975,443,…     S0 [S]           ?         ~3.1 | ~9.1 s
    midstream          NA                         443, 1883, 80     OTH [C] | [^c]   ?         ?
    firmware-tls       NA                         443               SF               200k-5M   5-180 s

Subtle rows are the ones a shallow reader gets wrong (a C&C heartbeat that looks like HTTPS, a
retried telnet SYN that looks like a scan), so a small model has a fail@K set. Sources: IoT-23
family names and the SYN-retry / single-SYN contrast are from SV-Bench's IoT-23 rows (benign
`tcp →23, duration 3.1, flags [S]` next to malicious `tcp →23, duration ?, flags [S]`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable

from sv_soar.tasks.e1.question import PROMPT_RE, Flow, parse_question, render_question  # noqa: F401 - re-exported
from sv_soar.tasks import Row

MALICIOUS, BENIGN = "Malicious", "Benign"
SOURCE = "sv-soar-builtin"

UDP_SERVICE_PORTS = frozenset({53, 67, 123, 1900, 5353})
C2_PORTS = frozenset({6667, 6697, 4554, 1312, 48101, 62336})
EXPLOIT_PORTS = frozenset({37215, 52869})
TELNET_PORTS = frozenset({23, 2323})
TLS_PORTS = frozenset({443, 8883})
HTTP_PORTS = frozenset({80, 8080})
SCAN_PORTS = ((23, 6), (2323, 1), (22, 3), (81, 2), (8080, 1), (50, 1), (21, 1), (5555, 1))


def classify_flow(flow: Flow) -> tuple[str, str]:
    """(label, rule id) from the decision list in the module docstring."""
    size, port, history = flow.bytes, flow.dport, flow.history
    if flow.proto == "icmp":
        if size is not None and size >= 1000:
            return MALICIOUS, "icmp-flood"
        return BENIGN, "icmp-ping"
    if flow.proto == "udp":
        if port == 53 and size is not None and size >= 512:
            return MALICIOUS, "udp-dns-oversized"
        if port in UDP_SERVICE_PORTS:
            return BENIGN, "udp-service"
        if size is not None and size >= 512:
            return MALICIOUS, "udp-flood"
        return BENIGN, "udp-other"
    if port in C2_PORTS:
        return MALICIOUS, "tcp-c2-port"
    if port in EXPLOIT_PORTS:
        return MALICIOUS, "tcp-exploit-port"
    if "S" not in history:
        return BENIGN, "tcp-midstream"
    if history == "Sr":
        return MALICIOUS, "tcp-rejected-probe"
    if history == "S":
        if flow.duration is None:
            return MALICIOUS, "tcp-single-syn"
        return BENIGN, "tcp-syn-retransmit"
    if port in TELNET_PORTS:
        return MALICIOUS, "tcp-telnet-session"
    if port in TLS_PORTS:
        if size is not None and size < 100:
            return MALICIOUS, "tcp-tls-tiny"
        return BENIGN, "tcp-tls"
    if port in HTTP_PORTS and size is not None and size >= 20000:
        return MALICIOUS, "tcp-http-large-download"
    return BENIGN, "tcp-session"


def conn_state(proto: str, history: str) -> str:
    """The Zeek conn_state a history implies (the `scenario` SV-Bench records)."""
    if proto == "icmp":
        return "OTH"
    if proto == "udp":
        return "SF" if "d" in history else "S0"
    if "S" not in history:
        return "OTH"
    if history == "S":
        return "S0"
    if history == "Sr":
        return "REJ"
    if "F" in history and "f" in history:
        return "SF"
    if "R" in history:
        return "RSTO"
    if "r" in history:
        return "RSTR"
    if "f" in history:
        return "S3"
    if "F" in history:
        return "S2"
    return "S1"


# --- sampling -----------------------------------------------------------------------------------

HISTORIES = {
    "SF": ("ShADadfF", "ShADadFf", "ShAdDafF", "ShAdDaFf", "ShADdaFf"),
    "S1": ("ShADad", "ShAdDa", "ShADda"),
    "S3": ("ShAdDaf", "ShADadf"),
    "RSTO": ("ShADadR", "ShAdDaR"),
    "RSTR": ("ShADadr", "ShAdfDr"),
}


def _ephemeral(rng: random.Random) -> int:
    return rng.randint(32768, 60999)  # Linux client ports, what benign IoT stacks use


def _random_port(rng: random.Random) -> int:
    return rng.randint(1024, 65535)  # Mirai-style bots pick source ports at random


def _seconds(rng: random.Random, low: float, high: float) -> float:
    return round(rng.uniform(low, high), 6)


def _weighted(rng: random.Random, choices) -> int:
    values, weights = zip(*choices)
    return rng.choices(values, weights=weights)[0]


def _tcp(rng, sport, dport, states, size, duration) -> Flow:
    history = rng.choice(HISTORIES[rng.choice(states)])
    return Flow("tcp", sport, dport, duration, size, history)


def _scan_syn(rng):
    return Flow("tcp", _random_port(rng), _weighted(rng, SCAN_PORTS), None, None, "S")


def _scan_rej(rng):
    return Flow("tcp", _random_port(rng), _weighted(rng, SCAN_PORTS), _seconds(rng, 0.0001, 0.25), None, "Sr")


def _ddos_udp(rng):
    port = rng.choice((80, 443, _random_port(rng)))
    if rng.random() < 0.5:
        return Flow("udp", _random_port(rng), port, None, rng.randint(512, 1472), "D")
    return Flow("udp", _random_port(rng), port, _seconds(rng, 0.001, 0.5), rng.randint(1500, 90000), "D")


def _ddos_icmp(rng):
    duration = None if rng.random() < 0.5 else _seconds(rng, 0.001, 1.0)
    return Flow("icmp", 8, 0, duration, rng.randint(1000, 65000), "")


def _ddos_syn(rng):
    return Flow("tcp", _random_port(rng), 80, None, None, "S")


def _cc_irc(rng):
    return _tcp(rng, _ephemeral(rng), rng.choice((6667, 6697)), ("SF", "S1", "S3", "RSTR"),
                rng.randint(60, 3000), _seconds(rng, 1.0, 600.0))


def _cc_midstream(rng):
    return Flow("tcp", _random_port(rng), rng.choice((62336, 48101)), None, None, "C")


def _okiru_exploit(rng):
    port = rng.choice((37215, 52869))
    if rng.random() < 0.5:
        return Flow("tcp", _random_port(rng), port, None, None, "S")
    return _tcp(rng, _random_port(rng), port, ("SF",), rng.randint(300, 1200), _seconds(rng, 0.05, 3.0))


def _telnet_bruteforce(rng):
    return _tcp(rng, _random_port(rng), rng.choice((23, 23, 2323)), ("SF", "RSTO", "RSTR"),
                rng.randint(20, 700), _seconds(rng, 0.5, 40.0))


def _file_download(rng):
    return _tcp(rng, _ephemeral(rng), rng.choice((80, 8080)), ("SF",),
                rng.randint(20000, 600000), _seconds(rng, 0.3, 20.0))


def _heartbeat_tls(rng):
    return _tcp(rng, _ephemeral(rng), 443, ("SF", "S1", "RSTO"), rng.randint(1, 99), _seconds(rng, 0.02, 2.5))


def _heartbeat_c2(rng):
    return _tcp(rng, _ephemeral(rng), rng.choice((4554, 1312, 48101)), ("SF",),
                rng.randint(1, 48), _seconds(rng, 0.05, 1.5))


def _dns_oversized(rng):
    if rng.random() < 0.5:
        return Flow("udp", _random_port(rng), 53, None, rng.randint(512, 1400), "D")
    return Flow("udp", _random_port(rng), 53, _seconds(rng, 0.001, 0.2), rng.randint(1500, 8000), "Dd")


def _scan_web(rng):
    return Flow("tcp", _random_port(rng), rng.choice((80, 443, 8080, 1883)), None, None, "S")


def _dns(rng):
    return Flow("udp", _ephemeral(rng), 53, _seconds(rng, 0.0003, 0.08), rng.randint(60, 200), "Dd")


def _dns_noanswer(rng):
    if rng.random() < 0.5:
        return Flow("udp", _ephemeral(rng), 53, None, rng.randint(28, 60), "D")
    # the resolver retries after 5 s, so Zeek sees two queries 5.00x s apart
    return Flow("udp", _ephemeral(rng), 53, _seconds(rng, 5.003, 5.008), rng.randint(56, 120), "D")


def _ntp(rng):
    sport = 123 if rng.random() < 0.5 else _ephemeral(rng)
    return Flow("udp", sport, 123, _seconds(rng, 0.005, 0.4), 96, "Dd")


def _ssdp_mdns(rng):
    sport, dport = (5353, 5353) if rng.random() < 0.5 else (_ephemeral(rng), 1900)
    duration = None if rng.random() < 0.5 else _seconds(rng, 0.5, 3.5)
    return Flow("udp", sport, dport, duration, rng.randint(90, 480), "D")


def _https(rng):
    return _tcp(rng, _ephemeral(rng), 443, ("SF", "S1", "RSTO", "RSTR"),
                rng.randint(600, 60000), _seconds(rng, 0.1, 300.0))


def _http(rng):
    return _tcp(rng, _ephemeral(rng), rng.choice((80, 80, 8080)), ("SF", "RSTR"),
                rng.randint(150, 8000), _seconds(rng, 0.02, 5.0))


def _mqtt(rng):
    return _tcp(rng, _ephemeral(rng), rng.choice((1883, 8883)), ("S1", "SF"),
                rng.randint(100, 6000), _seconds(rng, 10.0, 900.0))


def _ping(rng):
    if rng.random() < 0.5:
        return Flow("icmp", 8, 0, None, rng.randint(8, 64), "")
    return Flow("icmp", 8, 0, _seconds(rng, 0.0005, 0.3), rng.randint(16, 128), "")


def _udp_app(rng):
    port = rng.randint(1024, 65535)
    while port in UDP_SERVICE_PORTS:
        port = rng.randint(1024, 65535)
    history = rng.choice(("D", "Dd"))
    return Flow("udp", _ephemeral(rng), port, _seconds(rng, 0.5, 120.0), rng.randint(40, 500), history)


def _syn_retransmit(rng):
    # one retry after ~3 s, or two after ~9 s (3 + 6): Linux's SYN back-off
    duration = _seconds(rng, 2.95, 3.25) if rng.random() < 0.75 else _seconds(rng, 8.9, 9.3)
    return Flow("tcp", _ephemeral(rng), rng.choice((23, 23, 4975, 443, 1883, 80)), duration, None, "S")


def _midstream(rng):
    return Flow("tcp", _ephemeral(rng), rng.choice((443, 443, 1883, 80)), None, None, rng.choice(("C", "^c")))


def _firmware_tls(rng):
    return _tcp(rng, _ephemeral(rng), 443, ("SF",), rng.randint(200000, 5000000), _seconds(rng, 5.0, 180.0))


@dataclass(frozen=True)
class Template:
    name: str
    label: str
    family: str  # IoT-23 detailed label; "NA" for benign, as SV-Bench writes it
    cue: str  # "obvious" | "subtle"
    weight: float
    sample: Callable[[random.Random], Flow]


TEMPLATES = (
    Template("scan-syn", MALICIOUS, "PartOfAHorizontalPortScan", "obvious", 4.0, _scan_syn),
    Template("scan-rej", MALICIOUS, "PartOfAHorizontalPortScan", "obvious", 1.0, _scan_rej),
    Template("ddos-udp", MALICIOUS, "DDoS", "obvious", 1.0, _ddos_udp),
    Template("ddos-icmp", MALICIOUS, "DDoS", "obvious", 0.5, _ddos_icmp),
    Template("ddos-syn", MALICIOUS, "DDoS", "obvious", 0.5, _ddos_syn),
    Template("cc-irc", MALICIOUS, "C&C", "obvious", 1.5, _cc_irc),
    Template("cc-midstream", MALICIOUS, "C&C", "obvious", 1.0, _cc_midstream),
    Template("okiru-exploit", MALICIOUS, "Okiru", "obvious", 1.0, _okiru_exploit),
    Template("telnet-bruteforce", MALICIOUS, "Attack", "obvious", 1.0, _telnet_bruteforce),
    Template("file-download", MALICIOUS, "FileDownload", "obvious", 1.0, _file_download),
    Template("heartbeat-tls", MALICIOUS, "C&C-HeartBeat", "subtle", 1.0, _heartbeat_tls),
    Template("heartbeat-c2", MALICIOUS, "C&C-HeartBeat", "subtle", 1.0, _heartbeat_c2),
    Template("dns-oversized", MALICIOUS, "DDoS", "subtle", 0.75, _dns_oversized),
    Template("scan-web", MALICIOUS, "PartOfAHorizontalPortScan", "subtle", 1.0, _scan_web),
    Template("dns", BENIGN, "NA", "obvious", 3.0, _dns),
    Template("dns-noanswer", BENIGN, "NA", "obvious", 1.0, _dns_noanswer),
    Template("ntp", BENIGN, "NA", "obvious", 1.0, _ntp),
    Template("ssdp-mdns", BENIGN, "NA", "obvious", 1.0, _ssdp_mdns),
    Template("https", BENIGN, "NA", "obvious", 2.5, _https),
    Template("http", BENIGN, "NA", "obvious", 1.5, _http),
    Template("mqtt", BENIGN, "NA", "obvious", 1.5, _mqtt),
    Template("ping", BENIGN, "NA", "obvious", 0.75, _ping),
    Template("udp-app", BENIGN, "NA", "obvious", 0.75, _udp_app),
    Template("syn-retransmit", BENIGN, "NA", "subtle", 2.0, _syn_retransmit),
    Template("midstream", BENIGN, "NA", "subtle", 1.0, _midstream),
    Template("firmware-tls", BENIGN, "NA", "subtle", 0.75, _firmware_tls),
)


def _split(digest: str) -> str:
    bucket = int(digest, 16) % 100  # SV-Bench splits 70/15/15
    return "train" if bucket < 70 else "dev" if bucket < 85 else "test"


def generate_e1_flows(n: int, seed: int = 0, *, subtle_fraction: float = 0.3) -> list[Row]:
    """`n` distinct E1 rows, half Malicious (n // 2) and half Benign, the same for the same seed.

    `subtle_fraction` of each label's rows come from the "subtle" templates (the likely fail@K set).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= subtle_fraction <= 1.0:
        raise ValueError(f"subtle_fraction must be in [0, 1], got {subtle_fraction}")
    rng = random.Random(seed)
    labels = [MALICIOUS] * (n // 2) + [BENIGN] * (n - n // 2)
    rng.shuffle(labels)
    pools = {
        (label, cue): [t for t in TEMPLATES if t.label == label and t.cue == cue]
        for label in (MALICIOUS, BENIGN)
        for cue in ("obvious", "subtle")
    }
    rows: list[Row] = []
    seen: set[str] = set()
    for label in labels:
        for _attempt in range(1000):
            cue = "subtle" if rng.random() < subtle_fraction else "obvious"
            pool = pools[(label, cue)]
            template = rng.choices(pool, weights=[t.weight for t in pool])[0]
            flow = template.sample(rng)
            question = render_question(flow)
            if question not in seen:
                break
        else:
            raise RuntimeError(f"could not draw {n} distinct flows; ask for fewer")
        seen.add(question)
        decided, rule = classify_flow(flow)
        if decided != template.label:  # a template that breaks the written rules is a bug here
            raise AssertionError(f"template {template.name} drew {flow}, which rule {rule} labels {decided}")
        digest = hashlib.sha256(question.encode("utf-8")).hexdigest()[:16]
        rows.append(
            {
                "question": question,
                "answer": template.label,
                "meta": {
                    "source": SOURCE,
                    "scenario": conn_state(flow.proto, flow.history),
                    "attack_family": template.family,
                    "hash": digest,
                    "split": _split(digest),
                    "rule": rule,
                    "cue": template.cue,
                },
            }
        )
    return rows
