"""deploy/: the manifests parse and agree with each other, the image recipe follows `make setup`,
every flag they pass exists in the CLI, and the cluster-launcher config passes Ray's validation.

Nothing is built or applied: no Docker daemon or Kubernetes is needed.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from launcher.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RAYCLUSTER = DEPLOY / "kuberay" / "raycluster.yaml"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
SERVE = DEPLOY / "k8s" / "rankitect-serve.yaml"
STORAGE = DEPLOY / "k8s" / "storage.yaml"
LAUNCHER = DEPLOY / "ray-cluster-launcher.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
RAY_HEAD_PORTS = {6379, 8265, 10001}


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def one(path: Path, kind: str) -> dict[str, Any]:
    found = [d for d in docs(path) if d.get("kind") == kind]
    assert len(found) == 1, f"{path.name}: expected one {kind}, found {len(found)}"
    return found[0]


def images(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image" and isinstance(v, str)] + [
            i for v in node.values() for i in images(v)]
    if isinstance(node, list):
        return [i for v in node for i in images(v)]
    return []


def ray_pod_specs(cluster_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs of a RayCluster spec: head first, then each worker group."""
    head = cluster_spec["headGroupSpec"]["template"]["spec"]
    return [head] + [g["template"]["spec"] for g in cluster_spec["workerGroupSpecs"]]


def mounts(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the pod volume mounted there."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def volume_holding(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, dict[str, Any]]:
    """(mountPath, volume) of the mount that `path` lies under; fails when there is none."""
    for mount_path, volume in mounts(pod, container).items():
        if PurePosixPath(path).is_relative_to(mount_path):
            return mount_path, volume
    pytest.fail(f"{path} lies on no volume of container {container['name']}")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse a `rankitect ...` command line with the real parser; fails on a flag it lacks."""
    assert argv[0] == "rankitect", argv
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"the CLI rejects {shlex.join(argv)} (exit {exc.code})")


def flag(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} should appear once in {argv}"
    return argv[argv.index(name) + 1]


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def shared_claim() -> tuple[str, dict[str, Any]]:
    pvc = one(STORAGE, "PersistentVolumeClaim")
    return pvc["metadata"]["name"], pvc


# ---- every file --------------------------------------------------------------------------------

def test_every_yaml_parses_and_every_manifest_is_named() -> None:
    paths = sorted(DEPLOY.rglob("*.yaml"))
    assert {RAYCLUSTER, RAYJOB, SERVE, STORAGE, LAUNCHER} <= set(paths)
    for path in paths:
        loaded = docs(path)
        assert loaded, f"{path} holds no document"
        if path == LAUNCHER:
            continue
        for doc in loaded:
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path.name}: {sorted(doc)}"
            assert doc["metadata"].get("name"), f"{path.name}: a {doc['kind']} without a name"


def test_one_image_everywhere_tagged_with_the_project_version() -> None:
    found = {str(p.relative_to(DEPLOY)): set(images(docs(p))) for p in (RAYCLUSTER, RAYJOB, SERVE)}
    found["ray-cluster-launcher.yaml"] = set(images(docs(LAUNCHER)))
    assert all(found.values()), f"a file names no image: {found}"
    every = set().union(*found.values())
    assert len(every) == 1, f"more than one image: {found}"
    image = every.pop()
    assert image.rsplit(":", 1)[1] == project_version()
    assert f"-t {image} " in DOCKERFILE.read_text(), "the Dockerfile's build line tags another image"
    assert image in (DEPLOY / "README.md").read_text()


def test_readme_names_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.name != "README.md"):
        assert str(path.relative_to(DEPLOY)) in readme, f"deploy/README.md does not describe {path.name}"


def test_shared_claim_is_read_write_many() -> None:
    _, pvc = shared_claim()
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "every Ray node writes the run folder"


# ---- KubeRay ------------------------------------------------------------------------------------

def check_ray_cluster_spec(spec: dict[str, Any], where: str) -> None:
    import ray

    assert spec["rayVersion"] == ray.__version__, f"{where}: rayVersion is not the locked Ray"
    head = spec["headGroupSpec"]
    ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert RAY_HEAD_PORTS <= ports, f"{where}: head ports {sorted(ports)}"
    assert spec["workerGroupSpecs"], f"{where}: no worker group"
    groups = [head] + spec["workerGroupSpecs"]
    for group in groups:  # KubeRay takes rayStartParams as map[string]string
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    claim, _ = shared_claim()
    shared_paths = set()
    for pod in ray_pod_specs(spec):
        container = pod["containers"][0]
        assert container["image"] and container.get("resources", {}).get("limits"), f"{where}: {container['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert_ray_token_from_secret(container, f"{where}: {container['name']}")
        on_claim = [p for p, v in mounts(pod, container).items()
                    if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
        assert len(on_claim) == 1, f"{where}: {container['name']} does not mount {claim} once"
        shared_paths.add(on_claim[0])
    assert len(shared_paths) == 1, f"{where}: the shared claim sits at different paths {shared_paths}"


RAY_TOKEN_SECRET = "rankitect-ray-token"


def assert_ray_token_from_secret(container: dict[str, Any], where: str) -> None:
    """Ray's token authentication on, its token from the one Secret (not written in the manifest)."""
    env = {e["name"]: e for e in container.get("env", [])}
    assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{where}: RAY_AUTH_MODE is not token"
    ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
    assert ref.get("name") == RAY_TOKEN_SECRET and ref.get("key"), f"{where}: RAY_AUTH_TOKEN not from the Secret"
    assert "value" not in env["RAY_AUTH_TOKEN"], f"{where}: a token written in the manifest"


def test_serve_sends_the_ray_token() -> None:
    deployment = one(SERVE, "Deployment")
    assert_ray_token_from_secret(deployment["spec"]["template"]["spec"]["containers"][0], SERVE.name)


def test_cluster_launcher_nodes_get_the_token_file() -> None:
    raw = yaml.safe_load(LAUNCHER.read_text())
    options = " ".join(raw["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in options
    path = next(o.split("=", 1)[1] for o in raw["docker"]["run_options"] if "RAY_AUTH_TOKEN_PATH=" in o)
    assert path in raw["file_mounts"], "the token file is not copied to the nodes"


def test_raycluster() -> None:
    cluster = one(RAYCLUSTER, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    check_ray_cluster_spec(cluster["spec"], RAYCLUSTER.name)


def rayjob_entrypoint() -> tuple[dict[str, Any], list[str]]:
    job = one(RAYJOB, "RayJob")
    return job, shlex.split(job["spec"]["entrypoint"])


def test_rayjob_runs_a_search_on_its_own_cluster() -> None:
    job, argv = rayjob_entrypoint()
    assert job["apiVersion"] == "ray.io/v1"
    check_ray_cluster_spec(job["spec"]["rayClusterSpec"], RAYJOB.name)
    assert argv[:2] == ["rankitect", "search"], argv
    args = parse_cli(argv)
    assert args.command == "search" and args.address == "auto"


def test_rayjob_config_comes_from_its_configmap_and_data_runs_from_the_claim() -> None:
    from rankitect.experiment.config import SearchConfig

    job, argv = rayjob_entrypoint()
    args = parse_cli(argv)
    spec = job["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]["template"]["spec"]
    mount_path, volume = volume_holding(head, head["containers"][0], str(args.config))
    assert "configMap" in volume, f"--config {args.config} is not on a ConfigMap volume"
    configmap = one(RAYJOB, "ConfigMap")
    assert configmap["metadata"]["name"] == volume["configMap"]["name"]
    key = str(PurePosixPath(args.config).relative_to(mount_path))
    raw = yaml.safe_load(configmap["data"][key])
    config = SearchConfig.from_dict(raw)  # the search's own checks (no data needed)
    claim, _ = shared_claim()
    for pod in ray_pod_specs(spec):  # every node sees the dataset and the run folder
        for path in (config.data.path, str(args.out)):
            _, vol = volume_holding(pod, pod["containers"][0], str(path))
            assert vol.get("persistentVolumeClaim", {}).get("claimName") == claim, path


# ---- rankitect serve ----------------------------------------------------------------------------

def serve_parts() -> tuple[dict[str, Any], dict[str, Any], list[str], dict[str, Any]]:
    deployment = one(SERVE, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    argv = [str(a) for a in container.get("command", []) + container.get("args", [])]
    return pod, container, argv, one(SERVE, "Service")


def test_serve_port_is_the_same_everywhere() -> None:
    pod, container, argv, service = serve_parts()
    assert argv[:2] == ["rankitect", "serve"], argv
    assert flag(argv, "--host") == "0.0.0.0", "the default 127.0.0.1 is unreachable from outside the pod"
    port = int(flag(argv, "--port"))
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == port
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == port
    assert service_port["targetPort"] in (port, container_port.get("name"))
    deployment = one(SERVE, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items(), "the Service selects no serve pod"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for probe in ("readinessProbe", "livenessProbe"):
        assert probe in container, f"no {probe}"
    probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in container]
    for probe in probes:
        assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, probe
        assert probe["grpc"]["port"] == port
        assert probe["grpc"].get("service", "") == "", "the server reports SERVING for service ''"
    assert container.get("resources", {}).get("limits") and container["resources"].get("requests")


def test_serve_state_token_and_runs_are_on_volumes() -> None:
    pod, container, argv, _ = serve_parts()
    claim, _ = shared_claim()
    _, token = volume_holding(pod, container, flag(argv, "--token-file"))
    assert "secret" in token, "--token-file should come from a Secret"
    _, db = volume_holding(pod, container, flag(argv, "--db"))
    assert "persistentVolumeClaim" in db, "--db should be on a claim, to outlive the pod"
    db_claims = [d["metadata"]["name"] for d in docs(SERVE) if d["kind"] == "PersistentVolumeClaim"]
    assert db["persistentVolumeClaim"]["claimName"] in db_claims + [claim]
    _, runs = volume_holding(pod, container, flag(argv, "--runs-dir"))
    assert runs.get("persistentVolumeClaim", {}).get("claimName") == claim, "runs must be where Ray writes"
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_serve_attaches_to_the_raycluster_through_ray_client() -> None:
    _, _, argv, _ = serve_parts()
    name = one(RAYCLUSTER, "RayCluster")["metadata"]["name"]
    assert flag(argv, "--address") == f"ray://{name}-head-svc:10001"  # KubeRay's head Service


def test_serve_flags_exist_in_the_cli() -> None:
    if "serve" not in subcommands(build_parser()):
        pytest.skip("`rankitect serve` is not in launcher.cli yet (issue 7): its flags are checked once it is")
    _, _, argv, _ = serve_parts()
    args = parse_cli(argv)
    assert args.command == "serve"


# ---- the image recipe ---------------------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        lines.append(pending)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "") for ln in lines]


def pip_installs() -> list[list[str]]:
    """Each `pip install ...` of the Dockerfile's RUN lines, as argv from `install` on."""
    found = []
    for instruction, rest in dockerfile():
        if instruction != "RUN":
            continue
        lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for word in [*lexer, ";"]:  # split the shell line at && ; || |
            if word not in ("&&", ";", "||", "|"):
                command.append(word)
                continue
            if "pip" in command and "install" in command:
                found.append(command[command.index("install"):])
            command = []
    return found


def makefile_installs() -> list[list[str]]:
    """The `pip install` commands of the Makefile's setup, without --quiet or $(QUIET) (where
    their output goes)."""
    found = []
    text = (ROOT / "Makefile").read_text()
    recipe = text[text.index("$(STAMP):"):].split("\n\n")[0]  # setup's recipe, not setup-bench's
    for line in recipe.splitlines():
        command = line.split("2>&1")[0].replace("$(QUIET)", "")
        words = shlex.split(command) if "pip install" in line and "$(BIN)" in line else []
        if words:
            found.append([w for w in words[words.index("install"):] if w != "--quiet"])
    assert found, "no pip install in the Makefile's setup"
    return found


def test_dockerfile_installs_as_make_setup_does() -> None:
    installs = pip_installs()
    for make_cmd in makefile_installs():
        flags = {w for w in make_cmd if w.startswith("-")}
        target = make_cmd[-1]
        same = [cmd for cmd in installs if cmd[-1] == target]
        assert same, f"the Dockerfile has no install of {target!r} (Makefile: {make_cmd})"
        assert flags <= set(same[0]), f"{target}: Makefile flags {sorted(flags)}, Dockerfile {same[0]}"
    lock_install = next(cmd for cmd in installs if cmd[-1] == "requirements.lock")
    assert "--no-deps" in lock_install and "-r" in lock_install
    editable = next(cmd for cmd in installs if cmd[-1] == ".")
    assert {"--no-deps", "--no-build-isolation", "-e"} <= set(editable)
    # Every package install (all but pip's own upgrade) goes without dependency resolution.
    for cmd in installs:
        if "--upgrade" not in cmd:
            assert "--no-deps" in cmd, cmd


def test_dockerfile_torch_stack() -> None:
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    assert "torchrec==1.8.0" in lock, "torchrec comes in through the lock, hence with --no-deps"
    assert "fbgemm_gpu-cpu==1.8.0" in lock and not any(ln.startswith("fbgemm-gpu==") for ln in lock)
    for cmd in pip_installs():
        if any("torchrec" in w for w in cmd):
            assert "--no-deps" in cmd, f"torchrec without --no-deps pulls the CUDA fbgemm-gpu: {cmd}"
    torch = next(ln for ln in lock if ln.startswith("torch=="))
    lock_install = next(cmd for cmd in pip_installs() if cmd[-1] == "requirements.lock")
    if "+cpu" in torch:  # only the PyTorch CPU index carries the +cpu builds
        text = DOCKERFILE.read_text()
        assert "download.pytorch.org/whl/cpu" in text
        assert any(w in lock_install for w in ("--extra-index-url", "--index-url")), lock_install


def test_dockerfile_base_user_entry_ports_and_sources() -> None:
    instructions = dockerfile()
    froms = [rest for ins, rest in instructions if ins == "FROM"]
    assert froms == ["python:3.11-slim"]
    users = [rest for ins, rest in instructions if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    runs_as = [rest for ins, rest in instructions if ins in ("ENTRYPOINT", "CMD")]
    assert runs_as, "no ENTRYPOINT or CMD"
    first = runs_as[-1]
    words = yaml.safe_load(first) if first.startswith("[") else shlex.split(first)
    assert words[0] == "rankitect", words
    exposed = {int(p.split("/")[0]) for ins, rest in instructions if ins == "EXPOSE" for p in rest.split()}
    _, _, serve_argv, _ = serve_parts()
    assert RAY_HEAD_PORTS | {int(flag(serve_argv, "--port"))} <= exposed, exposed
    copied = {PurePosixPath(w).parts[0] for ins, rest in instructions if ins == "COPY"
              for w in shlex.split(rest)[:-1] if not w.startswith("--")}
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repo"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = packages | {"pyproject.toml", "requirements.lock", project["project"]["readme"]}
    assert needed <= copied, f"the build lacks {sorted(needed - copied)}"


# ---- Ray's cluster launcher ---------------------------------------------------------------------

def test_cluster_launcher_config_passes_rays_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(LAUNCHER.read_text())
    config = prepare_config(copy.deepcopy(raw))  # Ray's defaults, as `ray up` fills them in
    validate_config(config)
    assert config["docker"]["image"] in images(docs(RAYCLUSTER))
    head = " ".join(config["head_start_ray_commands"])
    assert "--head" in head and "--port=6379" in head and "--dashboard-host=0.0.0.0" in head
    assert "--ray-client-server-port=10001" in head


def test_cluster_launcher_config_through_ray_ups_own_path() -> None:
    from ray.autoscaler._private.commands import _bootstrap_config

    config = _bootstrap_config(yaml.safe_load(LAUNCHER.read_text()), no_config_cache=True)
    assert config["head_node_type"] in config["available_node_types"]


def test_rays_validation_is_not_vacuous() -> None:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(LAUNCHER.read_text()))
    config["docker"]["imagee"] = config["docker"]["image"]
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)
