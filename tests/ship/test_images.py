"""The Dockerfiles in images/: read and checked, since no container engine exists here to build them.

What a build would catch early is checked directly: every COPY source exists in the build context and
is not excluded by the .dockerignore, the wheel the Dockerfile installs is the one `pip wheel` really
produces at this version, the entrypoint is a console script the package declares, the labels that
OpenShift certification (preflight) reads are there, the user is not root, /licenses is populated, and
the operator's install set holds no torch.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from dockerfile_reader import Dockerfile, parse
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from speculators_core import version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
REQUIRED_LABELS = {"name", "vendor", "version", "release", "summary", "description", "maintainer", "url"}
# Packages that must never reach the operator image (GPU stack and ML libraries).
HEAVY = {"torch", "transformers", "triton", "datasets", "safetensors", "tokenizers", "numpy"}


@dataclass(frozen=True)
class Image:
    key: str
    entrypoint: str
    extra: str
    base_prefix: str
    reference: str  # the default image name the operator/chart/bundle use

    @property
    def dockerfile(self) -> Dockerfile:
        return parse(REPO / "images" / self.key / "Dockerfile")


IMAGES = [
    Image(
        "operator",
        "speculators-operator",
        "operator",
        "registry.access.redhat.com/ubi9/",
        version.OPERATOR_IMAGE,
    ),
    Image("runtime", "speculators", "ml,report", "nvcr.io/nvidia/cuda:", version.RUNTIME_IMAGE),
]
PARAMS = [pytest.param(i, id=i.key) for i in IMAGES]


def _dockerignore(image: Image) -> list[str]:
    path = REPO / "images" / image.key / "Dockerfile.dockerignore"
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _included(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches decides; `!` re-includes."""
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!")
        regex = re.escape(pat).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if re.fullmatch(regex, rel) or fnmatch.fnmatch(rel, pat):
            included = negate
    return included


@pytest.mark.parametrize("image", PARAMS)
def test_version_label_defaults_to_version_py(image: Image) -> None:
    final = image.dockerfile.final
    assert final.args.get("VERSION") == version.__version__
    assert final.labels()["version"] == version.__version__
    assert final.labels()["org.opencontainers.image.version"] == version.__version__


@pytest.mark.parametrize("image", PARAMS)
def test_certification_labels(image: Image) -> None:
    labels = image.dockerfile.final.labels()
    assert labels.keys() >= REQUIRED_LABELS
    assert all(labels[k].strip() for k in REQUIRED_LABELS)
    # name is the repository path of the default image reference, without registry and tag.
    repo_path = image.reference.split("/", 1)[1].rsplit(":", 1)[0]
    assert labels["name"] == repo_path
    assert labels["release"]


@pytest.mark.parametrize("image", PARAMS)
def test_base_images_are_pinned_and_expected(image: Image) -> None:
    df = image.dockerfile
    for stage in df.stages:
        assert stage.base.startswith(image.base_prefix), stage.base
        tag = stage.base.rsplit(":", 1)[1] if ":" in stage.base.split("/")[-1] else ""
        assert tag and tag != "latest", f"{stage.base} is not pinned to a tag"
    assert image.base_prefix.startswith(("registry.access.redhat.com/ubi9/", "nvcr.io/nvidia/cuda:"))
    if image.key == "runtime":
        assert df.final.base.endswith("-ubi9")  # CUDA on UBI 9


@pytest.mark.parametrize("image", PARAMS)
def test_copy_sources_exist_in_the_context_and_pass_the_dockerignore(image: Image) -> None:
    df = image.dockerfile
    stage_names = {s.name for s in df.stages if s.name}
    patterns = _dockerignore(image)
    for copy in df.copies():
        if copy.from_stage:
            assert copy.from_stage in stage_names, copy
            continue
        for src in copy.sources:
            path = REPO / src.rstrip("/")
            assert path.exists(), f"COPY {src}: not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*.py")] + list(path.rglob("*.yaml"))
            if path.is_dir() and not files:
                files = [p for p in path.rglob("*") if p.is_file()]
            assert files, f"COPY {src}: nothing to copy"
            for f in files:
                if "__pycache__" in f.parts:
                    continue
                rel = f.relative_to(REPO).as_posix()
                assert _included(rel, patterns), f"COPY {src}: {rel} is excluded by the .dockerignore"
    assert not _included(".venv/bin/python", patterns)
    assert not _included(".git/HEAD", patterns)


@pytest.mark.parametrize("image", PARAMS)
def test_entrypoint_is_a_declared_console_script(image: Image) -> None:
    entrypoint = image.dockerfile.final.exec_form("ENTRYPOINT")
    assert entrypoint == [image.entrypoint]
    target = PYPROJECT["project"]["scripts"][image.entrypoint]
    module, _, func = target.partition(":")
    parts = module.split(".")
    base = REPO / "operator" if parts[0] == "speculators_operator" else REPO
    source = base.joinpath(*parts).with_suffix(".py")
    tree = ast.parse(source.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body), target


@pytest.mark.parametrize("image", PARAMS)
def test_runs_as_non_root_without_a_fixed_uid_assumption(image: Image) -> None:
    final = image.dockerfile.final
    users = final.all("USER")
    assert users, "no USER: the image would run as root"
    last = users[-1].args
    assert last.isdigit() and int(last) != 0, f"final USER {last!r} must be a non-zero numeric UID"
    # No --chown to a fixed UID: OpenShift runs the image as an arbitrary UID in group 0.
    assert all("--chown" not in ins.args for ins in final.all("COPY"))


@pytest.mark.parametrize("image", PARAMS)
def test_licenses_directory_is_populated(image: Image) -> None:
    copies = [c for c in image.dockerfile.copies() if c.dest.rstrip("/") == "/licenses"]
    assert copies, "no COPY into /licenses"
    for copy in copies:
        for src in copy.sources:
            assert any(p.is_file() and "Apache License" in p.read_text() for p in (REPO / src).rglob("*"))


@pytest.mark.parametrize("image", PARAMS)
def test_installs_only_its_extra_pinned_by_the_constraints(image: Image) -> None:
    final = image.dockerfile.final
    installs = [
        i.args for i in final.all("RUN") if "pip install" in i.args and "-r /tmp/bench.txt" not in i.args
    ]
    assert len(installs) == 1
    tokens = shlex.split(final.expand(installs[0]))
    constraints = tokens[tokens.index("-c") + 1]
    assert any(
        c.dest == constraints and c.sources == ["requirements/constraints.txt"]
        for c in image.dockerfile.copies()
    )
    wheels = [t for t in tokens if ".whl[" in t]
    assert wheels == [
        f"/tmp/wheels/speculators_operator-{version.__version__}-py3-none-any.whl[{image.extra}]"
    ]


def test_the_wheel_the_dockerfiles_install_is_what_pip_builds(tmp_path: Path) -> None:
    """`pip wheel .` as in the build stage: its file name is what the final stage installs."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    wheels = sorted(p.name for p in tmp_path.glob("*.whl"))
    assert wheels == [f"speculators_operator-{version.__version__}-py3-none-any.whl"]


def _install_set(extras: str) -> set[str]:
    """Distribution names `pip install .[extras]` installs (extras comma-separated): pyproject's
    requirements, then each dependency's own (from its installed metadata), markers evaluated for this
    Python on Linux."""
    env = default_environment()
    project = PYPROJECT["project"]
    optional = [r for extra in extras.split(",") for r in project["optional-dependencies"][extra]]
    pending = [Requirement(r) for r in [*project["dependencies"], *optional]]
    seen: set[str] = set()
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        if name in seen:
            continue
        seen.add(name)
        for sub in metadata.distribution(name).requires or []:
            parsed = Requirement(sub)
            wanted_extras = req.extras or {""}
            if parsed.marker is None or any(
                parsed.marker.evaluate({**env, "extra": e}) for e in wanted_extras
            ):
                parsed.marker = None
                pending.append(parsed)
    return seen


def test_operator_install_set_holds_no_torch() -> None:
    operator_set = _install_set("operator")
    assert {"kopf", "kubernetes", "prometheus-client", "pydantic"} <= operator_set
    assert not operator_set & HEAVY, sorted(operator_set & HEAVY)
    assert not any(n.startswith("nvidia-") for n in operator_set)
    assert "torch" in _install_set("ml")  # the walk does find torch where it belongs


@pytest.mark.parametrize("extra", ["operator", "ml,report"])
def test_every_package_the_images_install_is_pinned(extra: str) -> None:
    pinned = {
        canonicalize_name(line.split("==")[0])
        for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    missing = _install_set(extra) - pinned
    assert not missing, f"not pinned in requirements/constraints.txt: {sorted(missing)}"


def test_operator_starts_without_torch_installed() -> None:
    """The operator image has no torch: its entry point must import with torch and transformers absent."""
    code = (
        "import sys\n"
        "for m in ('torch', 'transformers', 'safetensors', 'datasets', 'numpy'): sys.modules[m] = None\n"
        "from speculators_operator.main import build_parser\n"
        "build_parser().parse_args([])\n"
        "import speculators_operator.handlers.kopf_handlers\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_runtime_image_has_guidellm_in_its_own_venv() -> None:
    """`speculators benchmark` (the SpeculatorBenchmark Job) runs GuideLLM from /opt/guidellm: installed from
    requirements/bench.txt, every line pinned, over the ml packages through a .pth (as .venv-bench)."""
    image = next(i for i in IMAGES if i.key == "runtime")
    final = image.dockerfile.final
    runs = [final.expand(i.args) for i in final.all("RUN") if "-r /tmp/bench.txt" in i.args]
    assert len(runs) == 1
    assert "python3.11 -m venv /opt/guidellm" in runs[0]
    assert "site.addsitedir('/opt/speculators/lib/python3.11/site-packages')" in runs[0]
    assert any(
        c.dest == "/tmp/bench.txt" and c.sources == ["requirements/bench.txt"]
        for c in image.dockerfile.copies()
    )
    assert _included("requirements/bench.txt", _dockerignore(image))
    lines = [
        ln
        for ln in (REPO / "requirements" / "bench.txt").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert all("==" in ln for ln in lines) and "guidellm==0.8.1" in lines
    env = " ".join(i.args for i in final.all("ENV"))
    assert "SPECULATORS_GUIDELLM=/opt/guidellm/bin/guidellm" in env
