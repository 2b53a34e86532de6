"""Unit tests of hack/kubecluster that need no cluster: polling, PKI, manifests, binaries, start-up errors."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubecluster import (
    BinariesNotFound,
    EmbeddedCluster,
    StartupError,
    WaitTimeout,
    find_binaries,
    load_manifests,
)
from kubecluster.binaries import REQUIRED, Binaries
from kubecluster.cluster import STAGES_DIR, random_loopback_cidr
from kubecluster.pki import generate_pki
from kubecluster.wait import wait_for


def test_wait_for_returns_the_first_value_that_holds() -> None:
    values = iter([0, 1, 2, 3])
    assert wait_for(lambda: next(values), lambda v: v >= 2, timeout=5) == 2


def test_wait_for_timeout_names_what_and_the_last_state() -> None:
    with pytest.raises(
        WaitTimeout, match=r"waiting for the phase to be Running; last observed: \{'phase': 'Pending'\}"
    ):
        wait_for(
            lambda: {"phase": "Pending"},
            lambda s: s["phase"] == "Running",
            timeout=0.2,
            what="the phase to be Running",
        )


def test_wait_for_treats_ignored_exceptions_as_not_yet() -> None:
    calls = iter([KeyError("absent"), KeyError("absent"), "here"])

    def fetch() -> str:
        v = next(calls)
        if isinstance(v, Exception):
            raise v
        return v

    assert wait_for(fetch, timeout=5, ignore=(KeyError,)) == "here"
    with pytest.raises(WaitTimeout, match="KeyError"):
        wait_for(lambda: {}["x"], timeout=0.2, ignore=(KeyError,))


def test_pki_serving_cert_covers_loopback_and_clients_carry_groups(tmp_path: Path) -> None:
    pki = generate_pki(
        tmp_path,
        {"admin": ("admin", "system:masters"), "kcm": ("system:kube-controller-manager", None)},
        "10.96.0.1",
    )
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert serving.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)

    admin = x509.load_pem_x509_certificate(pki.clients["admin"].cert.read_bytes())
    admin.verify_directly_issued_by(ca)
    assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert stat.S_IMODE(os.stat(pki.clients["kcm"].key).st_mode) == 0o600


def test_load_manifests_flattens_lists_and_skips_empty_documents(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text(
        "kind: ConfigMap\napiVersion: v1\nmetadata: {name: a}\n---\n---\n"
        "kind: List\napiVersion: v1\nitems:\n- {kind: Secret, apiVersion: v1, metadata: {name: b}}\n"
    )
    assert [(o["kind"], o["metadata"]["name"]) for o in load_manifests([f])] == [
        ("ConfigMap", "a"),
        ("Secret", "b"),
    ]


def test_missing_binaries_error_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECULATORS_K8S_BIN", str(tmp_path))
    with pytest.raises(BinariesNotFound, match=r"make control-plane") as err:
        find_binaries()
    assert "kube-apiserver" in str(err.value) and str(tmp_path) in str(err.value)


def test_loopback_pod_cidrs_are_random_slices_of_127_8() -> None:
    nets = {ipaddress.ip_network(random_loopback_cidr()) for _ in range(20)}
    assert all(n.subnet_of(ipaddress.ip_network("127.0.0.0/8")) and n.prefixlen == 20 for n in nets)
    assert len(nets) > 1


def test_stage_files_are_kwok_stages_with_unique_names() -> None:
    docs = [d for f in sorted(STAGES_DIR.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    assert {d["kind"] for d in docs} == {"Stage"}
    names = [d["metadata"]["name"] for d in docs]
    assert len(names) == len(set(names))
    assert {"pod-ready", "job-pod-succeed", "job-pod-fail", "pod-delete", "node-initialize"} <= set(names)


def test_startup_failure_reports_the_component_log_and_leaves_no_process(tmp_path: Path) -> None:
    # Stand-in binaries (shell scripts), so the failure path runs without Kubernetes.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in REQUIRED:
        script = bin_dir / name
        script.write_text("#!/bin/sh\nexec sleep 600\n")
        script.chmod(0o755)
    (bin_dir / "etcd").write_text(
        "#!/bin/sh\necho 'etcd stand-in: bind: address already in use' >&2\nexit 3\n"
    )
    cluster = EmbeddedCluster(tmp_path / "state", binaries=Binaries(bin_dir))

    with pytest.raises(StartupError, match=r"etcd exited \(code 3\)[\s\S]*bind: address already in use"):
        cluster.start()
    assert not list((tmp_path / "state" / "pids").glob("*.json")), "every started process was stopped"
