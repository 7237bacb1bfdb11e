"""A real one-node Slurm cluster for the tests: munged, slurmctld and slurmd from Debian's packages (`make slurm`).

Session-scoped: the fixture writes a ``slurm.conf`` into a temporary folder (one node at 127.0.0.1 with this
machine's CPUs, ``proctrack/linuxproc``, ``task/none``: no systemd or cgroups needed), starts its own munged on its
own socket and key, then slurmctld and slurmd in the foreground (``-D``), waits until the node is idle, and at the
end stops exactly the processes it started (by PID), also when a test failed. Ports are picked free, so two test
sessions on one machine do not meet. ``SLURM_CONF`` is set for the session, so ``sbatch``/``squeue`` and everything
the kit runs talk to this cluster. Slurm's own job records (``jobcomp/filetxt``) land in ``jobcomp.log``.

Register once with ``pytest_plugins = ["slurm_fixtures"]``; the daemons need root (CI runs as root).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require

DAEMONS = ("munged", "slurmctld", "slurmd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    procs: dict[str, subprocess.Popen]

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def jobcomp(self) -> list[dict[str, str]]:
        """Slurm's own record of every finished job (JobId, JobName, JobState, StartTime, EndTime, ...)."""
        path = self.root / "jobcomp.log"
        if not path.is_file():
            return []
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in path.read_text().splitlines() if line.strip()]

    def squeue(self) -> str:
        return subprocess.run(
            ["squeue", "-h", "-r"], capture_output=True, text=True, env={**os.environ, **self.env}
        ).stdout


def _write_conf(root: Path) -> Path:
    host = socket.gethostname()
    cpus = os.cpu_count() or 1
    mem_mb = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.8)
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=wildsci-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=3600
KillWait=5
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.log
DefMemPerCPU=1024
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )
    return conf


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    for name in reversed(DAEMONS):  # slurmd, slurmctld, then munged
        p = procs.get(name)
        if p is None or p.poll() is not None:
            continue
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def start_cluster(root: Path) -> SlurmCluster:
    for d in ("state", "spool", "munge"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
    conf = _write_conf(root)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: dict[str, subprocess.Popen] = {}
    logs = {name: open(root / f"{name}.out", "w") for name in DAEMONS}
    try:
        procs["munged"] = subprocess.Popen(
            ["munged", "-F", "-f", f"--socket={root}/munge/munge.socket", f"--key-file={key}",
             f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/seed", f"--log-file={root}/munged.log"],
            stdout=logs["munged"], stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.time() + 10
        while not (root / "munge" / "munge.socket").exists():
            assert procs["munged"].poll() is None, (root / "munged.out").read_text()
            assert time.time() < deadline, "munged did not create its socket in 10 s"
            time.sleep(0.1)
        os.chmod(root / "munge", 0o755)  # clients (slurm's auth plugin) must reach the socket
        procs["slurmctld"] = subprocess.Popen(
            ["slurmctld", "-D", "-i"], stdout=logs["slurmctld"], stderr=subprocess.STDOUT, env=env
        )
        procs["slurmd"] = subprocess.Popen(["slurmd", "-D"], stdout=logs["slurmd"], stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 60
        while True:
            for name, p in procs.items():
                assert p.poll() is None, f"{name} exited: {(root / f'{name}.out').read_text()[-2000:]}"
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout.strip()
            if state == "idle":
                break
            assert time.time() < deadline, f"the Slurm node is not idle after 60 s (state {state!r})"
            time.sleep(0.5)
    except BaseException:
        _stop(procs)
        raise
    return SlurmCluster(root, conf, procs)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running one-node Slurm cluster; ``SLURM_CONF`` points at it for the whole session."""
    missing = [c for c in (*DAEMONS, "mungekey", "sbatch", "squeue") if shutil.which(c) is None]
    require(not missing, f"Slurm is not installed ({', '.join(missing)} missing) -- run `make slurm`")
    require(os.geteuid() == 0, "the Slurm daemons of the test cluster need root (CI runs as root)")
    # a short path: slurmd's spool and munge's socket path must stay under the 108-byte socket limit
    root = Path(tmp_path_factory.mktemp("slurm"))
    cluster = start_cluster(root)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        subprocess.run(["scancel", "--user", "root"], capture_output=True, env={**os.environ, **cluster.env})
        _stop(cluster.procs)
