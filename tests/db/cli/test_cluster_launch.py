"""The cluster launch files: ``deploy/k8s/`` (Kubernetes), ``scripts/slurm/alz-workers.sbatch``
(Slurm) and the commands of ``docs/cluster.md``.

No cluster and no database: the manifests are parsed as YAML and checked for what the workers
need (one GPU, the database URL from a Secret, the dataset read-only at one path, a clean-stop
grace period, non-root pods), and every container command is parsed by the project's own
argument parsers. The sbatch script runs under its dry-run switch (``ALZ_SLURM_DRY_RUN=1``) with
fake Slurm variables, and once for real with a fake ``srun`` and a fake ``alz-worker`` on PATH to
check that SIGTERM reaches the workers.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alz_db.cli import build_parser as alz_parser
from alz_db.cli.worker import build_parser as worker_parser
from alz_db.services.processes import parse_gpus

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
SBATCH = ROOT / "scripts" / "slurm" / "alz-workers.sbatch"
DOC = ROOT / "docs" / "cluster.md"
IMAGE = "autoloss-zero:latest"
URL = "postgresql://alz:s3cret@db.example.org:5432/alz"


# --- Kubernetes -------------------------------------------------------------------------------

def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in _manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def _by_kind(kind: str) -> list[dict]:
    return [d for _, d in _documents() if d["kind"] == kind]


def _one(kind: str, name: str) -> dict:
    found = [d for d in _by_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def _pod_specs() -> list[tuple[str, dict]]:
    """(kind/name, pod spec) of every workload."""
    specs = []
    for _, d in _documents():
        if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            specs.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
    return specs


def _containers() -> list[tuple[str, dict]]:
    out = []
    for where, spec in _pod_specs():
        for c in spec.get("initContainers", []) + spec["containers"]:
            out.append((f"{where}:{c['name']}", c))
    return out


def _argv(container: dict) -> list[str]:
    argv = list(container.get("command", [])) + list(container.get("args", []))
    assert argv, f"container {container['name']} relies on the image's CMD"
    assert all(isinstance(a, str) for a in argv), f"non-string argument in {argv}"
    return argv


def _env(container: dict, name: str) -> dict:
    found = [e for e in container.get("env", []) if e["name"] == name]
    assert len(found) == 1, f"{container['name']}: {name} set {len(found)} times"
    return found[0]


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of its sub-commands, recursively."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def _parse_project_command(argv: list[str]):
    """Parse a command line with the parser of the project's console script it names.

    Options must be spelled out: argparse would take a prefix (``--gpu`` for ``--gpus``), which
    breaks as soon as another option shares it."""
    if argv[0] == "alz":
        parser = alz_parser()
    elif argv[0] == "alz-worker":
        parser = worker_parser()
    else:
        raise AssertionError(f"not a project command: {argv}")
    known = _option_strings(parser)
    for word in argv[1:]:
        if word.startswith("--") and word != "--":
            assert word.split("=", 1)[0] in known, f"{word} is not an option of {argv[0]}"
    args = parser.parse_args(argv[1:])
    if argv[0] == "alz":
        assert callable(getattr(args, "func", None)), argv
    else:
        parse_gpus(args.gpus)  # raises on a bad --gpus list
    return args


def test_every_k8s_yaml_document_parses_and_names_its_kind():
    files = _manifest_files()
    assert len(files) >= 5
    for path in [*files, K8S / "kustomization.yaml"]:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path.name} holds no document"
        for d in docs:
            assert isinstance(d, dict), path.name
            assert d.get("apiVersion") and d.get("kind"), path.name
            if path.name != "kustomization.yaml":
                assert d["metadata"]["name"], path.name
    kinds = {d["kind"] for _, d in _documents()}
    assert {"Secret", "Job", "Deployment", "Service", "PersistentVolumeClaim"} <= kinds


def test_kustomization_lists_every_manifest_and_nothing_else():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization"
    resources = k["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    assert sorted(resources) == [p.name for p in _manifest_files()]


def _console_scripts() -> set[str]:
    """The names in ``[project.scripts]`` of pyproject.toml (no tomllib on Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", text, flags=re.M | re.S)
    assert section, "pyproject.toml has no [project.scripts]"
    return set(re.findall(r"^([\w.-]+)\s*=", section.group(1), flags=re.M))


def test_every_container_runs_a_project_command_that_parses():
    scripts = _console_scripts()
    containers = _containers()
    assert len(containers) >= 3
    assert {"alz", "alz-worker"} <= scripts
    seen = set()
    for where, c in containers:
        argv = _argv(c)
        assert argv[0] in scripts, f"{where}: {argv[0]} is not a console script of the project"
        _parse_project_command(argv)
        seen.add(tuple(argv[:2]))
    assert ("alz", "db") in seen and ("alz", "ui") in seen and ("alz-worker", "--gpus") in seen


def test_images_are_the_compose_image():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_images = {s["image"] for s in compose["services"].values()
                      if s.get("build") is not None}
    assert compose_images == {IMAGE}
    for where, c in _containers():
        assert c["image"] == IMAGE, where


def test_migration_job_upgrades_the_schema():
    job = _one("Job", "alz-migrate")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    args = _parse_project_command(_argv(c))
    assert (args.command, args.db_command) == ("db", "upgrade")
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_every_container_reads_the_database_url_from_the_example_secret():
    secret = _one("Secret", "alz-database")
    data = secret.get("stringData") or secret.get("data")
    for where, c in _containers():
        env = _env(c, "ALZ_DATABASE_URL")
        assert "value" not in env, f"{where}: the URL must not be written in the manifest"
        ref = env["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"], where
        assert ref["key"] in data, where
        assert not ref.get("optional", False), where  # no silent fallback to an embedded server
    # the example value is a recognisable placeholder, documented as one
    assert "CHANGE-ME" in data["ALZ_DATABASE_URL"]
    assert "EXAMPLE" in (K8S / "secret.example.yaml").read_text()


def test_worker_pod_has_exactly_one_gpu_and_runs_alz_worker_on_it():
    dep = _one("Deployment", "alz-worker")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    args = _parse_project_command(_argv(c))
    assert parse_gpus(args.gpus) == [0]
    assert args.database_url is None  # from the environment, i.e. the Secret
    limits = c["resources"]["limits"]
    assert int(str(limits["nvidia.com/gpu"])) == 1
    requested = c["resources"].get("requests", {}).get("nvidia.com/gpu")
    assert requested is None or int(str(requested)) == 1
    # a clean stop: the worker hands its evaluation back within one training iteration
    assert spec["terminationGracePeriodSeconds"] >= 60
    # scaling one pod at a time must not need a spare GPU
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    # the proxy-run work directories are on a writable volume, not in the image
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert any(str(args.data_dir).startswith(p + "/") for p in mounts), args.data_dir


def _dataset_mount() -> tuple[str, str]:
    """(mount path, PVC name) of the dataset in the worker pod, checked read-only."""
    spec = _one("Deployment", "alz-worker")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (c,) = spec["containers"]
    pvc_mounts = [m for m in c["volumeMounts"]
                  if "persistentVolumeClaim" in volumes[m["name"]]]
    assert len(pvc_mounts) == 1
    m = pvc_mounts[0]
    assert m.get("readOnly") is True
    claim = volumes[m["name"]]["persistentVolumeClaim"]
    assert claim.get("readOnly") is True
    return m["mountPath"], claim["claimName"]


def test_dataset_is_a_read_only_claim_at_the_compose_path():
    path, claim = _dataset_mount()
    pvc = _one("PersistentVolumeClaim", claim)
    assert "ReadOnlyMany" in pvc["spec"]["accessModes"]
    # the same path as docker-compose.yml's worker, so one --data-root works for both
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_targets = {v.split(":")[1] for v in compose["services"]["worker"]["volumes"]}
    assert path in compose_targets


def test_pods_run_as_non_root():
    for where, spec in _pod_specs():
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True, where
        # the image sets no USER: a numeric uid lets the kubelet check runAsNonRoot
        assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0, where
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where


def test_webapp_deployment_and_service_serve_alz_ui():
    dep = _one("Deployment", "alz-webapp")
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    args = _parse_project_command(_argv(c))
    assert args.command == "ui" and args.address == "0.0.0.0" and args.port == 8501
    assert args.database_url is None and args.role == "alz_reader"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert 8501 in ports.values()
    svc = _one("Service", "alz-webapp")
    selector = svc["spec"]["selector"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert selector.items() <= dep["spec"]["selector"]["matchLabels"].items()
    (port,) = svc["spec"]["ports"]
    target = port["targetPort"]
    assert (ports[target] if isinstance(target, str) else target) == args.port
    # the selectors of the workloads do not overlap (the Service reaches the app only)
    worker_labels = _one("Deployment", "alz-worker")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= worker_labels.items()


# --- Slurm ------------------------------------------------------------------------------------

def _run_sbatch(env: dict[str, str], *extra: str, timeout: float = 30
                ) -> subprocess.CompletedProcess:
    """The script in dry-run mode, in a clean environment plus ``env``."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
            "TMPDIR": "/scratch/tmp", "ALZ_SLURM_DRY_RUN": "1"}
    return subprocess.run(["bash", str(SBATCH), *extra], env={**base, **env},
                          capture_output=True, text=True, timeout=timeout)


def _dry_run(env: dict[str, str], *extra: str) -> tuple[list[str], list[list[str]]]:
    """(srun argv, alz-worker argvs) printed by a successful dry run."""
    r = _run_sbatch({"ALZ_DATABASE_URL": URL, **env}, *extra)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and all(line.startswith("+ ") for line in lines), r.stdout
    cmds = [shlex.split(line[2:]) for line in lines]
    srun, workers = cmds[0], cmds[1:]
    assert srun[0] == "srun"
    assert all(w[0] == "alz-worker" for w in workers), workers
    for cmd in cmds:  # the password never appears on a command line
        assert URL not in " ".join(cmd) and "s3cret" not in " ".join(cmd)
    return srun, workers


def _worker_args(worker_argv: list[str]) -> argparse.Namespace:
    assert worker_argv[0] == "alz-worker"
    return _parse_project_command(worker_argv)


def _gpus(worker_argv: list[str]) -> list[int]:
    return parse_gpus(_worker_args(worker_argv).gpus)


def test_sbatch_script_passes_bash_n_and_declares_its_slurm_options():
    r = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = SBATCH.read_text()
    assert text.startswith("#!/bin/bash\n")
    directives = re.findall(r"^#SBATCH\s+(\S+)", text, flags=re.M)
    # the directives must come before the first command, or sbatch ignores them
    first_command = next(i for i, line in enumerate(text.splitlines()[1:], 1)
                         if line.strip() and not line.startswith("#"))
    last_directive = max(i for i, line in enumerate(text.splitlines())
                         if line.startswith("#SBATCH"))
    assert last_directive < first_command
    assert "--ntasks-per-node=1" in directives
    assert any(re.fullmatch(r"--signal=(B:)?TERM@\d+", d) for d in directives), directives
    assert "--array" in text  # the job-array form is documented in the header


def test_dry_run_two_nodes_one_worker_command_per_node_with_the_job_gpus():
    srun, workers = _dry_run({"SLURM_JOB_GPUS": "0,1,2,3", "SLURM_NNODES": "2"})
    assert "--ntasks-per-node=1" in srun and "--nodes=2" in srun and "--ntasks=2" in srun
    assert len(workers) == 2
    for w in workers:
        assert _gpus(w) == [0, 1, 2, 3]
        args = _worker_args(w)
        assert args.search is None and args.database_url is None
        assert str(args.data_dir).startswith("/scratch/tmp/")  # node-local scratch


@pytest.mark.parametrize(("env", "expected"), [
    ({"SLURM_JOB_GPUS": "0,1,2,3"}, [0, 1, 2, 3]),
    ({"SLURM_STEP_GPUS": "2,3", "SLURM_JOB_GPUS": "0,1,2,3"}, [2, 3]),
    # cgroup-confined step: Slurm numbers the visible GPUs 0..n-1 in CUDA_VISIBLE_DEVICES while
    # SLURM_STEP_GPUS holds the physical indices, which the step cannot open
    ({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_STEP_GPUS": "2,3", "SLURM_JOB_GPUS": "2,3"}, [0, 1]),
    # no confinement: CUDA_VISIBLE_DEVICES holds the physical indices, kept as they are (0..n-1
    # would select other jobs' GPUs, since alz-worker replaces CUDA_VISIBLE_DEVICES per worker)
    ({"CUDA_VISIBLE_DEVICES": "2,3", "SLURM_JOB_GPUS": "2,3"}, [2, 3]),
    ({"CUDA_VISIBLE_DEVICES": "5"}, [5]),
    ({"SLURM_GPUS_ON_NODE": "4"}, [0, 1, 2, 3]),
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles", "SLURM_GPUS_ON_NODE": "2"}, [0, 1]),
    ({"ALZ_GPUS": "1", "CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_GPUS": "0,1"}, [1]),
])
def test_dry_run_gpu_list_from_the_slurm_variables(env, expected):
    srun, workers = _dry_run(env)
    assert "--nodes=1" in srun
    (w,) = workers
    assert _gpus(w) == expected


def test_dry_run_search_extra_arguments_nodes_and_cpus():
    srun, workers = _dry_run({"SLURM_JOB_GPUS": "0,1", "SLURM_JOB_NUM_NODES": "3",
                              "SLURM_NNODES": "3", "SLURM_CPUS_PER_TASK": "8",
                              "ALZ_SEARCH": "voc miou", "ALZ_WORKER_DATA_DIR": "/local/alz"},
                             "--idle-exit", "--lease-seconds", "90")
    assert "--nodes=3" in srun and "--cpus-per-task=8" in srun and "--export=ALL" in srun
    # the extra arguments travel to the step as its positional parameters
    assert srun[-3:] == ["--idle-exit", "--lease-seconds", "90"]
    assert len(workers) == 3
    for w in workers:
        args = _worker_args(w)
        assert args.search == "voc miou"
        assert args.idle_exit is True and args.lease_seconds == 90
        assert str(args.data_dir) == "/local/alz"
        assert parse_gpus(args.gpus) == [0, 1]


@pytest.mark.parametrize("env", [{}, {"ALZ_DATABASE_URL": ""}])
def test_unset_database_url_is_a_one_line_error(env):
    r = _run_sbatch({"SLURM_JOB_GPUS": "0", **env})
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "ALZ_DATABASE_URL" in lines[0]


@pytest.mark.parametrize(("env", "word"), [
    ({}, "no GPU"),
    ({"CUDA_VISIBLE_DEVICES": "GPU-3f2a9c1e-0000-1111-2222-333344445555"}, "ALZ_GPUS"),
    ({"ALZ_GPUS": "0,x"}, "not a list of GPU indices"),
])
def test_no_usable_gpu_list_is_a_one_line_error(env, word):
    r = _run_sbatch({"ALZ_DATABASE_URL": URL, **env})
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], r.stderr
    assert not [line for line in r.stdout.splitlines() if "alz-worker" in line]


FAKE_SRUN = """#!/bin/bash
# like srun in an allocation: run the command (one task), forward SIGTERM to it
while [[ $1 == --* ]]; do shift; done
"$@" &
child=$!
trap 'kill -TERM $child' TERM
wait $child
wait $child
"""

FAKE_WORKER = """#!/bin/bash
# records its arguments and whether the URL came through the environment, then waits for TERM
out=$ALZ_FAKE_OUT
printf '%s\\n' "$@" > "$out/argv"
[ "$ALZ_DATABASE_URL" = "$ALZ_FAKE_EXPECTED_URL" ] && echo yes > "$out/env-url"
trap 'echo TERM > "$out/signal"; exit 0' TERM
echo $$ > "$out/started"
while true; do sleep 0.1; done
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_real_run_forwards_sigterm_to_the_workers(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("alz-worker", FAKE_WORKER)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {"PATH": f"{fake}:/usr/bin:/bin", "LC_ALL": "C", "ALZ_DATABASE_URL": URL,
           "ALZ_FAKE_OUT": str(out), "ALZ_FAKE_EXPECTED_URL": URL, "TMPDIR": str(tmp_path),
           "SLURM_JOB_ID": "4242", "SLURM_NNODES": "1", "CUDA_VISIBLE_DEVICES": "0,1"}
    proc = subprocess.Popen(["bash", str(SBATCH), "--idle-exit"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (out / "started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the fake worker did not start"
            time.sleep(0.05)
        time.sleep(0.2)  # the script is waiting for srun
        proc.send_signal(signal.SIGTERM)  # as `scancel --batch --signal=TERM`
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert (out / "signal").read_text().strip() == "TERM"
    assert (out / "env-url").read_text().strip() == "yes"
    argv = (out / "argv").read_text().splitlines()
    args = _worker_args(["alz-worker", *argv])
    assert parse_gpus(args.gpus) == [0, 1] and args.idle_exit is True
    assert str(args.data_dir) == f"{tmp_path}/alz-worker-4242"
    assert URL not in argv


# --- docs/cluster.md --------------------------------------------------------------------------

def _doc_commands() -> list[list[str]]:
    """Every shell command of the doc's bash blocks, continuation lines joined."""
    text = DOC.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _project_argv(words: list[str]) -> list[str] | None:
    """The ``alz`` / ``alz-worker`` command line inside a shell command, if any."""
    if words[:2] == ["kubectl", "exec"] and "--" in words:
        words = words[words.index("--") + 1:]
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if words and words[0] in ("alz", "alz-worker"):
        return words
    return None


def test_doc_commands_parse_and_use_the_dataset_mount():
    commands = _doc_commands()
    project = [a for a in map(_project_argv, commands) if a is not None]
    assert len(project) >= 6
    for argv in project:
        _parse_project_command(argv)
    # the Kubernetes search is created at the worker pods' dataset mount
    mount, _ = _dataset_mount()
    in_pod = [w[w.index("--") + 1:] for w in commands
              if w[:2] == ["kubectl", "exec"] and "create" in w]
    assert in_pod
    for argv in in_pod:
        root = _parse_project_command(argv).data_root
        assert root.startswith(mount + "/"), root
    # the launch commands a researcher copies
    flat = [" ".join(w) for w in commands]
    assert any(c.startswith("sbatch -N 2 scripts/slurm/alz-workers.sbatch") for c in flat)
    assert any(c.startswith("sbatch") and "--array=" in c for c in flat)
    assert "kubectl apply -k deploy/k8s" in flat
    assert any(c.startswith("kubectl scale deployment/alz-worker --replicas=") for c in flat)
    assert "docker-compose.yml" in DOC.read_text()


def test_doc_cites_only_files_of_the_repository():
    text = DOC.read_text()
    paths = set(re.findall(r"`((?:deploy|scripts|docs|tests|alz_db|webapp)/[^`\s]*)`", text))
    paths |= set(re.findall(r"`((?:Dockerfile|docker-compose\.yml|README(?:\.md)?))`", text))
    assert paths
    for p in paths:
        p = "README.md" if p == "README" else p
        assert (ROOT / p).exists(), p
