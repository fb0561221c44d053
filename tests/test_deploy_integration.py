"""deploy/: the files checked on their own (fast), then the real thing (slow): `prefect server start`
on a loopback port with its own PREFECT_HOME, the `gpu` pool from deploy/pool.sh, deployments from
deploy/prefect.yaml, workers from deploy/worker.sh, `prefect deployment run score-corpus/nightly`
fanned out over 4 shards, and a worker killed in the middle of a shard.

Every process started here runs in its own process group and is stopped, with everything it
started, by a fixture's `finally`, also when a test fails."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RUN_DATE = "2026-11-28"
SCORE_OPTS = dict(max_length=64, device="cpu", workers=1)


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


def test_kubernetes_job_template_requests_one_gpu():
    template = json.loads((DEPLOY / "k8s-gpu-job-template.json").read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # every {{ placeholder }} must be a declared variable, or the worker fails at submission time
    used = set(re.findall(r"{{\s*([a-z_]+)\s*}}", json.dumps(template["job_configuration"])))
    assert used <= set(template["variables"]["properties"]), used - set(template["variables"]["properties"])


def test_scripts_parse():
    for script in ("server.sh", "pool.sh", "worker.sh"):
        subprocess.run(["bash", "-n", str(DEPLOY / script)], check=True)
    out = subprocess.run(["bash", str(DEPLOY / "worker.sh"), "nonsense"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


# ---------------------------------------------------------------------------------------- processes

class Proc:
    """A command in its own session (process group), output to a log file."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.log = log
        self.fh = open(log, "w")
        self.p = subprocess.Popen(args, env=env, cwd=REPO, stdout=self.fh, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
        """Stop it and everything it started: Prefect starts flow runs in sessions of their own, so
        the process tree is collected first, then each process signalled."""
        import psutil

        try:
            tree = psutil.Process(self.p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        if self.p.poll() is None:
            os.killpg(self.p.pid, sig)
        for child in tree:
            try:
                child.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=grace)
        for child in alive:
            child.kill()
        try:
            self.p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.fh.close()

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real Prefect server on a loopback port, SQLite in its own PREFECT_HOME; yields the CLI env."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = _free_port()
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
        env.update(PREFECT_API_URL=url, PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5")
        for _ in range(2):  # pool.sh is idempotent: the second run only re-applies the limits
            _cli(["bash", str(DEPLOY / "pool.sh")], {**env, "GPU_SLOTS": "2"})
        queues = _api(env, "/work_pools/gpu/queues/filter", {})
        assert {q["name"]: q["concurrency_limit"] for q in queues} == {"default": None, "control": 1, "shards": 2}
        assert _api(env, "/work_pools/gpu")["concurrency_limit"] == 3
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
    assert out.returncode == 0, f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
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
    from allsides_batch.aggregate import outlet_aggregates
    from allsides_batch.config import AggregateConfig, ScoreConfig
    from allsides_batch.score import score_corpus

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

@pytest.mark.slow
def test_nightly_deployment_fans_out_over_two_workers(server, workers, corpus4, tiny_model_dir, single_process,
                                                       tmp_path):
    workers.start("all", "worker-a")
    workers.start("gpu", "worker-b")
    out = tmp_path / "nightly"
    params = dict(corpus=[corpus4], model=tiny_model_dir, output=str(out), run_date=RUN_DATE, shard_size=1,
                  fan_out="deployment", min_articles=3, **SCORE_OPTS)
    parent = _run_deployment("score-corpus/nightly", params, server, workers)

    _assert_same(_scores(str(out)), single_process["scores"])
    night = out / "nights" / RUN_DATE
    _assert_same(_aggregates(str(night / "aggregates" / "window=all" / "part-0.parquet")), single_process["aggregates"])
    assert (night / "report" / "outlets.png").stat().st_size > 1000
    # four shard runs, children of the parent, each with its own scorer run summary
    assert len(list((out / "runs").glob(f"{RUN_DATE}-{parent[:8]}-shard*.json"))) == 4
    children = _api(server, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent]}}})
    assert len(children) == 4 and {c["state"]["type"] for c in children} == {"COMPLETED"}


@pytest.mark.slow
def test_worker_killed_mid_shard_rerun_completes_without_duplicates(server, workers, corpus4, tiny_model_dir,
                                                                    single_process, tmp_path):
    from allsides_batch.score import STALL_ENV

    marker = tmp_path / "stalled"
    # the scorer stops (as if the machine froze) after the second file's part is committed and before
    # its manifest entry: the worst moment, rows on disk that the manifest does not know about
    doomed = workers.start("gpu", "worker-doomed", **{STALL_ENV: "part-committed:2", f"{STALL_ENV}_MARKER": str(marker)})
    out = tmp_path / "shard"
    files = sorted(str(p) for p in Path(corpus4).glob("*.parquet"))
    params = dict(files=files, model=tiny_model_dir, output=str(out), run_id="shard-under-test", options=SCORE_OPTS)
    _cli(["prefect", "deployment", "run", "score-shard/gpu", "--params", json.dumps(params)], server)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert time.monotonic() < deadline, f"the shard never reached the stall point\n{workers.logs_tail()}"
        time.sleep(0.5)
    doomed.stop(signal.SIGKILL)
    assert len(list((out / "_manifest").rglob("*.json"))) == 1
    assert len(list((out / "scores").rglob("*.parquet"))) == 2

    workers.start("gpu", "worker-fresh")
    _run_deployment("score-shard/gpu", params, server, workers)
    assert len(list((out / "_manifest").rglob("*.json"))) == 4
    _assert_same(_scores(str(out)), single_process["scores"])  # every row once: no duplicates, none lost
