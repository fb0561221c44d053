"""deploy/: the files checked on their own (fast), then the real thing (slow): `prefect server start`
on a loopback port with its own PREFECT_HOME, the `gpu` pool from deploy/pool.sh, the automations from
deploy/automations.py (their webhook pointed at a receiver in this process), deployments from
deploy/prefect.yaml, workers from deploy/worker.sh; then `prefect deployment run score-corpus/nightly`
fanned out over 4 shards, a worker killed in the middle of a shard (its run marked Crashed by the
zombie automation), a shard that fails once and completes on its retry, and a night past its deadline
that cancels its shards and sends the failure notification.

Every process started here runs in its own process group and is stopped, with everything it
started, by a fixture's `finally`, also when a test fails."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from process_groups import Proc, free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RUN_DATE = "2026-11-28"
SCORE_OPTS = dict(max_length=64, device="cpu", workers=1)
# heartbeats every 30 s (Prefect's minimum); a run silent for 60 s is a zombie (production: 60 and 300)
HEARTBEAT_S, ZOMBIE_AFTER_S = 30, 60


def _automations_module():
    spec = importlib.util.spec_from_file_location("deploy_automations", DEPLOY / "automations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------ the files alone

def test_prefect_yaml_deployments():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    deployments = {}
    for d in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / d["entrypoint"]))
        deployments[f"{flow.name}/{d['name']}"] = d
    assert set(deployments) == {"score-corpus/nightly", "score-shard/gpu", "train-model/manual"}
    nightly = deployments["score-corpus/nightly"]
    assert nightly["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": True}]
    assert {d["work_pool"]["name"] for d in deployments.values()} == {"gpu"}
    assert nightly["work_pool"]["work_queue_name"] == "control"
    assert {"corpus", "output", "model"} <= set(nightly["parameters"])
    assert spec["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ repo-root.stdout }}"


def test_kubernetes_job_template_requests_a_gpu_per_job_variable():
    # the GPU is the `gpu_count` job variable (no default: left out of the pod unless a deployment sets
    # it); rendered with Prefect's templating in test_deploy_files.py
    template = json.loads((DEPLOY / "k8s-gpu-job-template.json").read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert "default" not in template["variables"]["properties"]["gpu_count"]
    # every {{ placeholder }} must be a declared variable, or the worker fails at submission time
    used = set(re.findall(r"{{\s*([a-z_]+)\s*}}", json.dumps(template["job_configuration"])))
    assert used <= set(template["variables"]["properties"]), used - set(template["variables"]["properties"])


def test_scripts_parse():
    for script in ("server.sh", "pool.sh", "worker.sh"):
        subprocess.run(["bash", "-n", str(DEPLOY / script)], check=True)
    out = subprocess.run(["bash", str(DEPLOY / "worker.sh"), "nonsense"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


def test_automations_file_names_the_flows_it_watches():
    from prefect.flows import load_flow_from_entrypoint

    auto = _automations_module()
    spec = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    flows = {d["name"]: load_flow_from_entrypoint(str(REPO / d["entrypoint"])).name for d in spec["deployments"]}
    automations = {a.name: a for a in auto.check()}  # validated as Prefect's own AutomationCore
    assert set(automations) == {"allsides-crash-zombie-flow-runs", "allsides-night-failed"}

    zombie = automations["allsides-crash-zombie-flow-runs"]
    assert zombie.trigger.posture == "Proactive" and zombie.trigger.after == {"prefect.flow-run.heartbeat"}
    assert set(zombie.trigger.match_related.get("prefect.resource.name")) == set(flows.values())
    final = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "TimedOut", "Cancelled", "Crashed")}
    assert zombie.trigger.expect == final | {"prefect.flow-run.heartbeat"}
    assert zombie.trigger.for_each == {"prefect.resource.id"}
    assert [(a.type, a.state.value) for a in zombie.actions] == [("change-flow-run-state", "CRASHED")]
    # the window must hold several heartbeats of the workers deploy/worker.sh starts (and of Prefect's default)
    beat = int(re.search(r'PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-(\d+)', (DEPLOY / "worker.sh").read_text()).group(1))
    assert 30 <= beat and zombie.trigger.within.total_seconds() >= max(3 * beat, 180 + 60)

    night = automations["allsides-night-failed"]
    assert night.trigger.match_related.get("prefect.resource.name") == [flows["nightly"]] == ["score-corpus"]
    assert night.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.TimedOut", "prefect.flow-run.Crashed"}
    assert [a.type for a in night.actions] == ["send-notification"]
    assert auto.block_refs(auto.load()) == {auto.NOTIFY_BLOCK}


@pytest.mark.slow
def test_automations_script_rejects_what_prefect_would(tmp_path):
    # no server configured anywhere: an empty PREFECT_HOME, no PREFECT_* variables
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"))
    ok = subprocess.run([sys.executable, str(DEPLOY / "automations.py"), "--check"], env=env, capture_output=True,
                        text=True, cwd=REPO)
    assert ok.returncode == 0 and ok.stdout.split() == ["ok:", "allsides-crash-zombie-flow-runs", "ok:",
                                                         "allsides-night-failed"], ok.stderr
    short = subprocess.run([sys.executable, str(DEPLOY / "automations.py"), "--check"], capture_output=True, text=True,
                           env={**env, "ALLSIDES_ZOMBIE_AFTER_S": "5"}, cwd=REPO)
    assert short.returncode == 2 and "at least 10 s" in short.stderr
    nowhere = subprocess.run([sys.executable, str(DEPLOY / "automations.py")], capture_output=True, text=True,
                             env=env, cwd=REPO)
    assert nowhere.returncode == 2 and "PREFECT_API_URL is not set" in nowhere.stderr


def test_automations_file_with_a_wrong_field_fails_validation(tmp_path):
    auto = _automations_module()
    text = (DEPLOY / "automations.yaml").read_text().replace("posture: Proactive", "posture: Sometimes")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(auto.SetupError, match=r"(?s)allsides-crash-zombie-flow-runs.*posture"):
        auto.check(tmp_path / "bad.yaml")


def test_shard_retry_condition_and_defaults():
    from prefect.states import Failed

    from allsides_batch.errors import ConfigError, UserError
    from allsides_batch.flows.score_corpus import SHARD_TIMEOUT_S, _retryable_shard, score_shard_flow, score_shard_task

    def retried(exc: BaseException) -> bool:
        return _retryable_shard(score_shard_task, None, Failed(data=exc))

    assert retried(OSError("stale file handle")) and retried(RuntimeError("CUDA error: unspecified launch failure"))
    assert not retried(UserError("model directory not found")) and not retried(ConfigError("max_length", "must be > 0"))
    assert not retried(TimeoutError("Scope timed out after 21600 second(s)."))
    assert score_shard_task.retries == 2 and score_shard_task.retry_delay_seconds == [60, 300]
    assert score_shard_task.timeout_seconds == SHARD_TIMEOUT_S
    assert score_shard_flow.parameters.properties["timeout_s"]["default"] == SHARD_TIMEOUT_S


# ---------------------------------------------------------------------------------------- processes

class Receiver:
    """An HTTP endpoint in this process that records what is POSTed to it: the failure notification's
    webhook points here."""

    def __init__(self):
        self.posts: list[dict] = []
        received = self.posts

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                received.append({"path": self.path, "body": json.loads(body or b"null")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/allsides-night-failed"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, text: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for post in list(self.posts):
                if text in json.dumps(post["body"]):
                    return post
            time.sleep(0.5)
        raise AssertionError(f"no notification mentioning {text!r} within {timeout} s; got {self.posts}")


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    try:
        yield r
    finally:
        r.httpd.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, receiver):
    """A real Prefect server on a loopback port, SQLite in its own PREFECT_HOME; yields the CLI env."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false", PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = Proc(["bash", str(DEPLOY / "server.sh")], {**env, "PORT": str(port)}, home / "server.log")
    try:
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.p.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not start:\n{proc.tail()}")
            time.sleep(1)
        env.update(PREFECT_API_URL=url, PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5",
                   PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_S))
        for _ in range(2):  # pool.sh is idempotent: the second run only re-applies the limits
            _cli(["bash", str(DEPLOY / "pool.sh")], {**env, "GPU_SLOTS": "2"})
        queues = _api(env, "/work_pools/gpu/queues/filter", {})
        assert {q["name"]: q["concurrency_limit"] for q in queues} == {"default": None, "control": 1, "shards": 2}
        assert _api(env, "/work_pools/gpu")["concurrency_limit"] == 3
        auto_env = {**env, "ALLSIDES_NOTIFY_URL": receiver.url, "ALLSIDES_ZOMBIE_AFTER_S": str(ZOMBIE_AFTER_S)}
        first = _cli([sys.executable, str(DEPLOY / "automations.py")], auto_env)
        again = _cli([sys.executable, str(DEPLOY / "automations.py")],
                     {**env, "ALLSIDES_ZOMBIE_AFTER_S": str(ZOMBIE_AFTER_S)})
        assert first.count("created automation") == 2 and again.count("updated automation") == 2, (first, again)
        assert "kept" in again  # rerun without a URL: the block keeps the one it has
        automations = {a["name"]: a for a in _api(env, "/automations/filter", {})}
        assert set(automations) == {"allsides-crash-zombie-flow-runs", "allsides-night-failed"}
        assert automations["allsides-crash-zombie-flow-runs"]["trigger"]["within"] == ZOMBIE_AFTER_S
        _cli(["prefect", "--no-prompt", "deploy", "--prefect-file", "deploy/prefect.yaml", "--all"], env)
        yield env
    finally:
        proc.stop()


def _api(env: dict, path: str, body: dict | None = None):
    """GET (or POST `body` to) the server's REST API."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(env["PREFECT_API_URL"] + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _cli(args: list[str], env: dict, timeout: float = 300) -> str:
    out = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (f"{' '.join(args)} failed ({out.returncode}):\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


class Workers:
    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.procs = env, logs, []

    def start(self, role: str, name: str, **extra_env: str) -> Proc:
        proc = Proc(["bash", str(DEPLOY / "worker.sh"), role],
                    {**self.env, "WORKER_NAME": name, **extra_env}, self.logs / f"{name}.log")
        self.procs.append(proc)
        return proc

    def logs_tail(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.tail()}" for p in self.procs)


@pytest.fixture
def workers(server, tmp_path):
    w = Workers(server, tmp_path)
    try:
        yield w
    finally:
        for proc in w.procs:
            proc.stop()


def _run_deployment(name: str, params: dict, env: dict, workers: Workers, timeout: int = 600) -> str:
    """`prefect deployment run NAME --watch`; returns the flow run id after checking it Completed."""
    out = subprocess.run(["prefect", "deployment", "run", name, "--params", json.dumps(params), "--watch",
                          "--watch-interval", "2", "--watch-timeout", str(timeout)],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout + 60)
    assert out.returncode == 0, f"{name}: {out.stdout[-2000:]}\n{out.stderr[-2000:]}\n{workers.logs_tail()}"
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout).group(1)
    state = _api(env, f"/flow_runs/{run_id}")["state"]
    assert state["type"] == "COMPLETED", state
    return run_id


def _start_deployment(name: str, params: dict, env: dict) -> str:
    """`prefect deployment run NAME` without waiting; returns the flow run id."""
    out = _cli(["prefect", "deployment", "run", name, "--params", json.dumps(params)], env)
    return re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)


def _wait_state(env: dict, run_id: str, types: set[str], timeout: float, workers: Workers) -> dict:
    """Poll a flow run until its state type is one of `types`; returns the run."""
    deadline = time.monotonic() + timeout
    while True:
        run = _api(env, f"/flow_runs/{run_id}")
        if run["state"]["type"] in types:
            return run
        assert time.monotonic() < deadline, (f"flow run {run['name']} still {run['state']['type']} after {timeout} s "
                                             f"(waiting for {types}): {run['state']['message']}\n{workers.logs_tail()}")
        time.sleep(1)


def _task_runs(env: dict, flow_run_id: str) -> list[dict]:
    return _api(env, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}})


# ------------------------------------------------------------------------------------------- outputs

@pytest.fixture(scope="module")
def corpus4(articles_sample, tmp_path_factory) -> str:
    table = pq.read_table(articles_sample).slice(0, 240)
    out = tmp_path_factory.mktemp("corpus4")
    for i in range(4):
        pq.write_table(table.take(np.arange(i, 240, 4)), out / f"part-{i}.parquet")  # 60 rows, mixed outlets
    return str(out)


@pytest.fixture(scope="module")
def single_process(corpus4, tiny_model_dir, tmp_path_factory) -> dict:
    """The reference: the library called directly, in this process."""
    from allsides_batch.analysis.aggregate import outlet_aggregates
    from allsides_batch.config import AggregateConfig, ScoreConfig
    from allsides_batch.scoring import score_corpus

    out = tmp_path_factory.mktemp("single")
    s = score_corpus(ScoreConfig(model=tiny_model_dir, input=[corpus4], output=str(out), progress=False, **SCORE_OPTS))
    agg = outlet_aggregates(AggregateConfig(scores=str(out / "scores"), output=str(out / "agg"), model_id=s.model_id,
                                            min_articles=3))
    return {"scores": _scores(str(out)), "aggregates": _aggregates(agg.output_path), "model_id": s.model_id}


def _scores(output: str) -> pa.Table:
    files = sorted(Path(output, "scores").rglob("*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files).drop_columns(["run_id", "scored_at"]).sort_by(
        [("id", "ascending"), ("source", "ascending")])


def _aggregates(path: str) -> pa.Table:
    return pq.read_table(path).drop_columns(["aggregated_at"]).sort_by("outlet")


def _assert_same(a: pa.Table, b: pa.Table) -> None:
    assert a.column_names == b.column_names and a.num_rows == b.num_rows
    for name in a.column_names:
        if pa.types.is_floating(a.schema.field(name).type):
            np.testing.assert_allclose(np.array(a[name].to_pylist(), dtype=float),
                                       np.array(b[name].to_pylist(), dtype=float), atol=1e-5, err_msg=name)
        else:
            assert a[name].to_pylist() == b[name].to_pylist(), name


# --------------------------------------------------------------------------------------------- tests

def _wait_online(env: dict, names: set[str], timeout: float, workers: Workers) -> None:
    """Until every named worker has registered with the pool and is ONLINE (heartbeating)."""
    deadline = time.monotonic() + timeout
    while True:
        status = {w["name"]: w["status"] for w in _api(env, "/work_pools/gpu/workers/filter", {})}
        if all(status.get(n) == "ONLINE" for n in names):
            return
        assert time.monotonic() < deadline, f"workers not online after {timeout} s: {status}\n{workers.logs_tail()}"
        time.sleep(1)


def _submitted_by(proc: Proc) -> list[str]:
    """The flow run names a worker's own output says it started: the worker logs this line only after the
    server accepted its Pending proposal, so a worker that lost a race for a run does not log it."""
    text = " ".join(proc.log.read_text().split())  # undo the console's line wrapping
    return re.findall(r"Flow run '([^']+)' submitted to infrastructure", text)


@pytest.mark.slow
@pytest.mark.timeout(900)  # a real server, workers and flow runs: minutes on a loaded 2-core machine
def test_nightly_deployment_fans_out_over_two_workers(server, workers, corpus4, tiny_model_dir, single_process,
                                                       tmp_path):
    """Both workers take shards. Why it is not luck: worker-a (role `all`, limit 2) holds the parent run
    in one of its two slots, so it runs at most one shard at a time; the `shards` queue allows two at once
    (GPU_SLOTS=2); and worker-b (limit 1) polls every 2 s (PREFETCH 5 s) while four shard runs wait, each of
    which takes a fresh Python process several seconds to run. Worker-b takes none only if it never polls."""
    worker_a = workers.start("all", "worker-a")
    worker_b = workers.start("gpu", "worker-b")
    _wait_online(server, {"worker-a", "worker-b"}, 120, workers)
    out = tmp_path / "nightly"
    params = dict(corpus=[corpus4], model=tiny_model_dir, output=str(out), run_date=RUN_DATE, shard_size=1,
                  fan_out="deployment", min_articles=3, **SCORE_OPTS)
    parent = _run_deployment("score-corpus/nightly", params, server, workers)

    # Who ran each shard: the worker that won a run's Pending state labels it with its name
    # (prefect.worker.name); each worker's own output names the runs it started. The two must agree,
    # every shard ran once (one worker, one Running state), and each worker ran at least one.
    children = _api(server, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent]}}})
    shard_names = [f"{RUN_DATE}-{parent[:8]}-shard{i:03d}" for i in range(4)]
    assert sorted(c["name"] for c in children) == shard_names
    ran_by = {c["name"]: (c.get("labels") or {}).get("prefect.worker.name") for c in children}
    by_worker: dict = {}
    for name, worker in sorted(ran_by.items()):
        by_worker.setdefault(worker, []).append(name)
    assert set(by_worker) == {"worker-a", "worker-b"}, f"shards by worker: {by_worker}\n{workers.logs_tail()}"
    parent_run = _api(server, f"/flow_runs/{parent}")
    assert (parent_run.get("labels") or {}).get("prefect.worker.name") == "worker-a"  # the only control worker
    logged = {"worker-a": _submitted_by(worker_a), "worker-b": _submitted_by(worker_b)}
    assert sorted(logged["worker-a"] + logged["worker-b"]) == sorted(shard_names + [parent_run["name"]]), logged
    assert {w: sorted(n for n in names if n in shard_names) for w, names in logged.items()} == by_worker, logged
    for child in children:
        states = [(st["type"], st["name"]) for st in _api(server, f"/flow_run_states/?flow_run_id={child['id']}")]
        assert states.count(("PENDING", "Pending")) == 1 and [t for t, _ in states].count("RUNNING") == 1, (
            child["name"], states)

    _assert_same(_scores(str(out)), single_process["scores"])
    night = out / "nights" / RUN_DATE
    _assert_same(_aggregates(str(night / "aggregates" / "window=all" / "part-0.parquet")), single_process["aggregates"])
    assert (night / "report" / "outlets.png").stat().st_size > 1000
    # four shard runs, children of the parent, each with its own scorer run summary
    assert len(list((out / "runs").glob(f"{RUN_DATE}-{parent[:8]}-shard*.json"))) == 4
    children = _api(server, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent]}}})
    assert len(children) == 4 and {c["state"]["type"] for c in children} == {"COMPLETED"}


@pytest.mark.slow
@pytest.mark.timeout(900)  # a real server, workers and flow runs: minutes on a loaded 2-core machine
def test_worker_killed_mid_shard_rerun_completes_without_duplicates(server, workers, corpus4, tiny_model_dir,
                                                                    single_process, tmp_path):
    from allsides_batch.scoring import STALL_ENV

    marker = tmp_path / "stalled"
    # the scorer stops (as if the machine froze) after the second file's part is committed and before
    # its manifest entry: the worst moment, rows on disk that the manifest does not know about
    doomed = workers.start("gpu", "worker-doomed",
                           **{STALL_ENV: "part-committed:2", f"{STALL_ENV}_MARKER": str(marker)})
    out = tmp_path / "shard"
    files = sorted(str(p) for p in Path(corpus4).glob("*.parquet"))
    params = dict(files=files, model=tiny_model_dir, output=str(out), run_id="shard-under-test", options=SCORE_OPTS)
    killed = _start_deployment("score-shard/gpu", params, server)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert time.monotonic() < deadline, f"the shard never reached the stall point\n{workers.logs_tail()}"
        time.sleep(0.5)
    doomed.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    assert len(list((out / "_manifest").rglob("*.json"))) == 1
    assert len(list((out / "scores").rglob("*.parquet"))) == 2

    workers.start("gpu", "worker-fresh")
    _run_deployment("score-shard/gpu", params, server, workers)
    assert len(list((out / "_manifest").rglob("*.json"))) == 4
    _assert_same(_scores(str(out)), single_process["scores"])  # every row once: no duplicates, none lost

    # The killed run sends no more heartbeats: the zombie automation marks it Crashed (freeing its
    # queue slot) within ZOMBIE_AFTER_S of its last heartbeat, plus the server's evaluation period.
    zombie = _wait_state(server, killed, {"CRASHED"}, max(5, ZOMBIE_AFTER_S + 60 - (time.monotonic() - killed_at)),
                         workers)
    assert "allsides-crash-zombie-flow-runs" in zombie["state"]["message"], zombie["state"]


@pytest.mark.slow
@pytest.mark.timeout(900)  # a real server, workers and flow runs: minutes on a loaded 2-core machine
def test_shard_failing_once_completes_on_its_retry(server, workers, corpus4, tiny_model_dir, tmp_path):
    """A real failure: `scores` under the output is a file, so the shard cannot create its part
    directory. It is put right while the task waits for its retry; the retry then scores every file.
    Bad input (a model directory that does not exist) fails once and is not retried."""
    workers.start("gpu", "worker-retry")
    out = tmp_path / "retry"
    out.mkdir()
    blocker = out / "scores"
    blocker.write_text("a file where the scores directory goes")
    files = sorted(str(p) for p in Path(corpus4).glob("*.parquet"))[:2]
    params = dict(files=files, model=tiny_model_dir, output=str(out), run_id="shard-retried", options=SCORE_OPTS,
                  retry_delays_s=[15])
    run_id = _start_deployment("score-shard/gpu", params, server)
    deadline = time.monotonic() + 240
    while True:
        tasks = [t for t in _task_runs(server, run_id) if t["name"].startswith("score-shard")]
        if tasks and tasks[0]["state"]["name"] == "AwaitingRetry":
            break
        run = _api(server, f"/flow_runs/{run_id}")
        assert run["state"]["type"] not in {"COMPLETED", "FAILED", "CRASHED"}, (run["state"], workers.logs_tail())
        assert time.monotonic() < deadline, f"no retry scheduled\n{workers.logs_tail()}"
        time.sleep(0.3)
    blocker.unlink()
    run = _wait_state(server, run_id, {"COMPLETED", "FAILED", "CRASHED"}, 240, workers)
    assert run["state"]["type"] == "COMPLETED", (run["state"], workers.logs_tail())
    (task,) = [t for t in _task_runs(server, run_id) if t["name"].startswith("score-shard")]
    assert task["run_count"] == 2 and task["state"]["type"] == "COMPLETED"
    states = [st["name"] for st in _api(server, f"/task_run_states/?task_run_id={task['id']}")]
    assert states.count("AwaitingRetry") == 1 and states[-1] == "Completed", states
    logs = " ".join(log["message"]
                    for log in _api(server, "/logs/filter", {"logs": {"task_run_id": {"any_": [task["id"]]}}}))
    assert re.search(r"(NotADirectoryError|FileExistsError).* - Retry 1/2 will start", logs), logs
    assert len(list((out / "_manifest").rglob("*.json"))) == 2 and len(list((out / "scores").rglob("*.parquet"))) == 2

    bad = _start_deployment("score-shard/gpu", {**params, "model": str(tmp_path / "no-such-model"),
                                                "run_id": "shard-bad-input"}, server)
    run = _wait_state(server, bad, {"COMPLETED", "FAILED", "CRASHED"}, 180, workers)
    assert run["state"]["type"] == "FAILED" and "model directory not found" in run["state"]["message"], run["state"]
    (task,) = [t for t in _task_runs(server, bad) if t["name"].startswith("score-shard")]
    assert task["run_count"] == 1 and task["state"]["type"] == "FAILED"  # a UserError is not retried


@pytest.mark.slow
@pytest.mark.timeout(900)  # a real server, workers and flow runs: minutes on a loaded 2-core machine
def test_night_past_its_deadline_cancels_its_shards_and_notifies(server, workers, receiver, corpus4, tiny_model_dir,
                                                                 tmp_path):
    """Two shards, one GPU worker whose scorer stalls inside the first: the second cannot start. At the
    deadline the night cancels both (the running one through its worker, the scheduled one at once),
    fails, and the failure automation posts to the webhook."""
    from allsides_batch.scoring import STALL_ENV

    marker = tmp_path / "stalled"
    workers.start("control", "worker-control")
    workers.start("gpu", "worker-stalls", **{STALL_ENV: "part-committed:1", f"{STALL_ENV}_MARKER": str(marker)})
    deadline_s = 60
    params = dict(corpus=[corpus4], model=tiny_model_dir, output=str(tmp_path / "late"), run_date=RUN_DATE,
                  shard_size=2, fan_out="deployment", shard_timeout_s=deadline_s, min_articles=3, **SCORE_OPTS)
    parent_id = _start_deployment("score-corpus/nightly", params, server)
    parent = _wait_state(server, parent_id, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, deadline_s + 240, workers)
    assert marker.exists(), f"the first shard never reached the stall point\n{workers.logs_tail()}"
    message = parent["state"]["message"]
    assert parent["state"]["type"] == "FAILED" and "TimeoutError" in message, parent["state"]
    assert "cancelled 2 of the 2 shard run(s) still pending" in message, message

    children = _api(server, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent_id]}}})
    assert sorted(c["name"] for c in children) == [f"{RUN_DATE}-{parent_id[:8]}-shard000",
                                                   f"{RUN_DATE}-{parent_id[:8]}-shard001"]
    histories = []
    for child in children:
        child = _wait_state(server, child["id"], {"CANCELLED", "COMPLETED", "FAILED", "CRASHED"}, 90, workers)
        assert child["state"]["type"] == "CANCELLED", child["state"]
        histories.append(_api(server, f"/flow_run_states/?flow_run_id={child['id']}"))
    # the stalled one went Cancelling (with the night's reason) and Cancelled once its worker stopped
    # it; the other was still Scheduled, which the server cancels at once
    ran, waited = sorted(histories, key=lambda h: "RUNNING" not in [st["type"] for st in h])
    assert [st["type"] for st in ran][-3:] == ["RUNNING", "CANCELLING", "CANCELLED"], ran
    assert ran[-2]["message"].startswith(f"the night {parent['name']} stopped early (TimeoutError"), ran[-2]
    assert {st["type"] for st in waited[:-1]} == {"SCHEDULED"} and waited[-1]["type"] == "CANCELLED", waited  # or Late
    assert not (tmp_path / "late" / "nights").exists()  # no aggregates for a night that did not finish

    post = receiver.wait_for(parent["name"], timeout=60)
    text = post["body"]["text"]
    # a TimeoutError out of a flow makes Prefect name the Failed state TimedOut
    assert parent["state"]["name"] == "TimedOut"
    assert text.startswith(f"allsides night failed: {parent['name']} (TimedOut)") and "cancelled 2" in text, text
    assert f"/runs/flow-run/{parent_id}" in text  # a link to the run (PREFECT_UI_URL, set by server.sh)
