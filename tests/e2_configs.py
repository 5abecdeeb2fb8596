"""E2 configs the oracle, rubric, env and teacher tests share: a pod and a Terraform file with known findings,
a YAML bomb, and the mark for tests that apply patches with GNU patch."""

from __future__ import annotations

import shutil

import pytest

POD = """apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: nginx
"""

SAFE_POD = """apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  securityContext:
    runAsNonRoot: true
  containers:
  - name: web
    image: nginx:1.25.3
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
    resources:
      requests: {cpu: 100m, memory: 64Mi}
      limits: {cpu: 200m, memory: 128Mi}
"""

BAD_TF = """provider "aws" {
  region     = "us-east-1"
  secret_key = "abc123"
}
resource "aws_ebs_volume" "data" {
  availability_zone = "us-east-1a"
  size              = 40
}
"""


def billion_laughs(levels: int = 9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    names = "abcdefghijklmnop"
    for prev, name in zip(names, names[1:levels + 1]):
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    return text


needs_gnu_patch = pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch is not installed")
