# kube-linter's default checks that SV-Bench's E2 labels use, under kube-linter's own rule ids
# (kube-linter 0.7.6, the version SV-Bench's data was labelled with). Written from kube-linter's
# check documentation and checked against the labels of SV-Bench's public mini set
# (benchmarks/e2_oracle.py prints the agreement per rule).
#
# input: {"objects": [<every K8s object of one file, as JSON>]}
# output: data.svsoar.kubelinter.violations, a set of {"rule", "object", "container", "msg"}
package svsoar.kubelinter

import rego.v1

# Kinds whose pod spec kube-linter extracts, and where it sits. kube-linter decodes objects with the
# Kubernetes client scheme; extensions/v1beta1 workloads are not in it, so they get no pod checks
# (only no-extensions-v1beta), as SV-Bench's labels show.
template_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "DeploymentConfig"}

replicated_kinds := {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController", "DeploymentConfig"}

selector_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}

decodable(obj) if obj.apiVersion != "extensions/v1beta1"

pod_template(obj) := t if {
	decodable(obj)
	template_kinds[obj.kind]
	t := object.get(obj, ["spec", "template"], {})
}

pod_template(obj) := t if {
	decodable(obj)
	obj.kind == "CronJob"
	t := object.get(obj, ["spec", "jobTemplate", "spec", "template"], {})
}

pod_template(obj) := {"metadata": object.get(obj, "metadata", {}), "spec": object.get(obj, "spec", {})} if {
	obj.kind == "Pod"
}

pod_spec(obj) := object.get(pod_template(obj), "spec", {})

# concat, not sprintf("%s/%s", ...): rego-cpp (regopy 1.5) formats the "" that object.get defaults to as
# two quote characters there (Pod/""), which broke the JSON of the result for an object without a name
name(obj) := concat("/", [obj.kind, sprintf("%v", [object.get(obj, ["metadata", "name"], "")])])

as_list(x) := x if is_array(x)

as_list(x) := [] if not is_array(x)

as_obj(x) := x if is_object(x)

as_obj(x) := {} if not is_object(x)

containers(spec) := array.concat(as_list(object.get(spec, "containers", [])), as_list(object.get(spec, "initContainers", [])))

# (object, container) pairs of every pod-bearing object of the input
pods contains [obj, spec, c] if {
	some obj in input.objects
	spec := as_obj(pod_spec(obj))
	some c in containers(spec)
	is_object(c)
}

sc(c) := as_obj(object.get(c, "securityContext", {}))

pod_sc(spec) := as_obj(object.get(spec, "securityContext", {}))

v(obj, c, rule, msg) := {"rule": rule, "object": name(obj), "container": object.get(c, "name", ""), "msg": msg}

# --- image ----------------------------------------------------------------------------------------

image_tag(image) := tag if {
	not contains(image, "@")
	parts := split(image, "/")
	last := parts[count(parts) - 1]
	contains(last, ":")
	pieces := split(last, ":")
	tag := pieces[count(pieces) - 1]
}

latest_image(image) if image_tag(image) == "latest"

latest_image(image) if {
	not contains(image, "@")
	not image_tag(image)
}

violations contains v(obj, c, "latest-tag", "Use a container image with a specific tag other than latest.") if {
	some [obj, _, c] in pods
	latest_image(object.get(c, "image", ""))
}

# --- security context -----------------------------------------------------------------------------

effective(spec, c, key) := sc(c)[key]

effective(spec, c, key) := pod_sc(spec)[key] if not key in object.keys(sc(c))

runs_as_non_root(spec, c) if effective(spec, c, "runAsNonRoot") == true

runs_as_non_root(spec, c) if {
	user := effective(spec, c, "runAsUser")
	is_number(user)
	user > 0
}

violations contains v(obj, c, "run-as-non-root", "Set runAsUser to a non-zero number and runAsNonRoot to true in your pod or container securityContext.") if {
	some [obj, spec, c] in pods
	not runs_as_non_root(spec, c)
}

violations contains v(obj, c, "no-read-only-root-fs", "Set readOnlyRootFilesystem to true in the container securityContext.") if {
	some [obj, _, c] in pods
	object.get(sc(c), "readOnlyRootFilesystem", false) != true
}

violations contains v(obj, c, "privileged-container", "Do not run your container as privileged unless it is required.") if {
	some [obj, _, c] in pods
	object.get(sc(c), "privileged", false) == true
}

escalates(c) if object.get(sc(c), "allowPrivilegeEscalation", false) == true

escalates(c) if object.get(sc(c), "privileged", false) == true

escalates(c) if {
	some cap in as_list(object.get(sc(c), ["capabilities", "add"], []))
	upper(trim_prefix(sprintf("%v", [cap]), "CAP_")) == "SYS_ADMIN"
}

violations contains v(obj, c, "privilege-escalation-container", "Ensure containers do not allow privilege escalation by setting allowPrivilegeEscalation=false, privileged=false and removing CAP_SYS_ADMIN capability.") if {
	some [obj, _, c] in pods
	escalates(c)
}

cap_names(caps) := {upper(trim_prefix(sprintf("%v", [x]), "CAP_")) | some x in as_list(caps)}

raw_allowed(c) if {
	caps := as_obj(sc(c).capabilities)
	count({"NET_RAW", "ALL"} & cap_names(object.get(caps, "add", []))) > 0
}

raw_allowed(c) if {
	caps := as_obj(sc(c).capabilities)
	count({"NET_RAW", "ALL"} & cap_names(object.get(caps, "drop", []))) == 0
}

violations contains v(obj, c, "drop-net-raw-capability", "NET_RAW makes it possible to launch a network attack; drop it from the container capabilities.") if {
	some [obj, _, c] in pods
	raw_allowed(c)
}

# --- resources ------------------------------------------------------------------------------------

unset(x) if x == null

unset(x) if x == 0

unset(x) if x == "0"

unset(x) if x == ""

violations contains v(obj, c, "unset-cpu-requirements", "Set CPU requests for your container based on its requirements.") if {
	some [obj, _, c] in pods
	unset(object.get(c, ["resources", "requests", "cpu"], null))
}

violations contains v(obj, c, "unset-memory-requirements", "Set memory limits for your container based on its requirements.") if {
	some [obj, _, c] in pods
	unset(object.get(c, ["resources", "limits", "memory"], null))
}

# --- environment ----------------------------------------------------------------------------------

violations contains v(obj, c, "env-var-secret", "Do not use raw secrets in environment variables; use a secretKeyRef instead.") if {
	some [obj, _, c] in pods
	some e in as_list(object.get(c, "env", []))
	contains(lower(sprintf("%v", [object.get(e, "name", "")])), "secret")
	object.get(e, "value", "") != ""
}

# --- host namespaces and mounts -------------------------------------------------------------------

pod_objects contains [obj, spec] if {
	some obj in input.objects
	spec := as_obj(pod_spec(obj))
	count(spec) > 0
}

host_fields := {
	"hostNetwork": ["host-network", "Ensure the host's network namespace is not shared."],
	"hostPID": ["host-pid", "Ensure the host's process namespace is not shared."],
	"hostIPC": ["host-ipc", "Ensure the host's IPC namespace is not shared."],
}

violations contains {"rule": pair[0], "object": name(obj), "container": "", "msg": pair[1]} if {
	some [obj, spec] in pod_objects
	some field, pair in host_fields
	object.get(spec, field, false) == true
}

sensitive_dirs := {"/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr"}

host_path(spec, volume_name) := p if {
	some vol in as_list(object.get(spec, "volumes", []))
	object.get(vol, "name", "") == volume_name
	p := sprintf("%v", [object.get(vol, ["hostPath", "path"], "")])
	p != ""
}

mounted_host_paths contains [obj, c, p] if {
	some [obj, spec, c] in pods
	some m in as_list(object.get(c, "volumeMounts", []))
	p := host_path(spec, object.get(m, "name", ""))
}

clean_dir(p) := "/" if trim_right(p, "/") == ""

clean_dir(p) := trim_right(p, "/") if trim_right(p, "/") != ""

violations contains v(obj, c, "sensitive-host-mounts", sprintf("Sensitive host directory %s is mounted into the container.", [p])) if {
	some [obj, c, p] in mounted_host_paths
	sensitive_dirs[clean_dir(p)]
}

violations contains v(obj, c, "docker-sock", "Do not mount the host's docker.sock into the container.") if {
	some [obj, c, p] in mounted_host_paths
	endswith(clean_dir(p), "docker.sock")
}

# --- service accounts -----------------------------------------------------------------------------

namespace(obj) := object.get(obj, ["metadata", "namespace"], "")

service_accounts contains [namespace(obj), object.get(obj, ["metadata", "name"], "")] if {
	some obj in input.objects
	obj.kind == "ServiceAccount"
}

account(spec) := a if {
	a := object.get(spec, "serviceAccountName", "")
	a != ""
}

account(spec) := a if {
	object.get(spec, "serviceAccountName", "") == ""
	a := object.get(spec, "serviceAccount", "")
	a != ""
}

violations contains {"rule": "non-existent-service-account", "object": name(obj), "container": "", "msg": concat("", ["serviceAccount \"", a, "\" not found"])} if {
	some [obj, spec] in pod_objects
	a := account(spec)
	a != "default"
	not service_accounts[[namespace(obj), a]]
}

violations contains {"rule": "deprecated-service-account-field", "object": name(obj), "container": "", "msg": "Use the serviceAccountName field instead of the deprecated serviceAccount."} if {
	some [obj, spec] in pod_objects
	object.get(spec, "serviceAccount", "") != ""
}

# --- services and selectors -----------------------------------------------------------------------

pod_labels contains [namespace(obj), labels] if {
	some obj in input.objects
	labels := as_obj(object.get(pod_template(obj), ["metadata", "labels"], {}))
}

selects(selector, labels) if {
	every k, val in selector {
		labels[k] == val
	}
}

violations contains {"rule": "dangling-service", "object": name(obj), "container": "", "msg": "No pods found matching service labels."} if {
	some obj in input.objects
	obj.kind == "Service"
	selector := as_obj(object.get(obj, ["spec", "selector"], {}))
	count(selector) > 0
	not any_selected(namespace(obj), selector)
}

any_selected(ns, selector) if {
	some [ns2, labels] in pod_labels
	ns2 == ns
	selects(selector, labels)
}

violations contains {"rule": "mismatching-selector", "object": name(obj), "container": "", "msg": "The selector does not match the pod template labels."} if {
	some obj in input.objects
	decodable(obj)
	selector_kinds[obj.kind]
	not selector_matches(obj)
}

selector_matches(obj) if {
	match := as_obj(object.get(obj, ["spec", "selector", "matchLabels"], {}))
	expressions := as_list(object.get(obj, ["spec", "selector", "matchExpressions"], []))
	count(match) + count(expressions) > 0
	selects(match, as_obj(object.get(obj, ["spec", "template", "metadata", "labels"], {})))
}

# --- replicas, jobs, API versions -----------------------------------------------------------------

violations contains {"rule": "no-anti-affinity", "object": name(obj), "container": "", "msg": "Specify anti-affinity in your pod specification to ensure that the orchestrator attempts to schedule replicas on different nodes."} if {
	some obj in input.objects
	decodable(obj)
	replicated_kinds[obj.kind]
	replicas := object.get(obj, ["spec", "replicas"], 1)
	is_number(replicas)
	replicas >= 2
	count(as_obj(object.get(pod_spec(obj), ["affinity", "podAntiAffinity"], {}))) == 0
}

violations contains {"rule": "job-ttl-seconds-after-finished", "object": name(obj), "container": "", "msg": "Set ttlSecondsAfterFinished on standalone Jobs so that finished Jobs are cleaned up."} if {
	some obj in input.objects
	decodable(obj)
	obj.kind == "Job"
	object.get(obj, ["spec", "ttlSecondsAfterFinished"], null) == null
}

violations contains {"rule": "no-extensions-v1beta", "object": name(obj), "container": "", "msg": "Migrate to a supported API version: extensions/v1beta1 is removed."} if {
	some obj in input.objects
	obj.apiVersion == "extensions/v1beta1"
}
