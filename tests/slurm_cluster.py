"""A real, private SLURM cluster for tests: Debian's slurmctld + two slurmd ("nodes" n1, n2) + munged,
all inside a loopback-only network namespace (no traffic can leave the machine; node names resolve
from a private hosts file). Everything lives in one temporary directory; nothing under /etc or /run is
touched. Recipe and gotchas: shared/spec/platform.md section 1.

Needs root (network namespaces, bind mounts) and the packages ``slurmctld slurmd slurm-client munge``;
``LocalSlurmCluster.unavailable()`` says why a machine cannot run it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

TOOLS = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel", "sinfo", "munged", "mungekey", "ip", "nsenter", "unshare")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")

SLURM_CONF = """\
ClusterName=selfsupci
SlurmctldHost=localhost
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
KillWait=10
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
Waittime=0
NodeName=n1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17001 CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=8000 State=UNKNOWN
NodeName=n2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17002 CPUs=2 Sockets=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""

# Runs a command inside the namespace with the private hosts/resolv.conf bind-mounted in a private
# mount namespace (`ip netns exec` would remount /sys and break slurmd).
NSRUN = """#!/bin/sh
exec nsenter --net=/run/netns/{ns} unshare -m --propagation private /bin/sh -c \\
  'mount --bind {root}/etc/hosts /etc/hosts && mount --bind {root}/etc/resolv.conf /etc/resolv.conf && exec "$@"' nsrun "$@"
"""


def _alive(pid: int) -> bool:
    """Running (a zombie left for init to reap counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _which(tool: str) -> str | None:
    return shutil.which(tool) or next((f"{d}/{tool}" for d in SBIN if os.access(f"{d}/{tool}", os.X_OK)), None)


class LocalSlurmCluster:
    """Start with ``start()``, run clients with ``run([...])`` / ``popen([...])`` (inside the namespace,
    ``SLURM_CONF`` set), stop with ``stop()`` (kills only the daemons it started, by pid)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.ns = f"selfsup-{uuid.uuid4().hex[:8]}"
        self.conf = self.root / "slurm.conf"
        self.nsrun = self.root / "nsrun"
        # stopped in this order: controller, nodes, then the authentication daemon they all use
        self._pid_files = [self.root / "run" / f for f in ("slurmctld.pid", "slurmd-n1.pid", "slurmd-n2.pid")]
        self._pid_files.append(self.root / "munge" / "munged.pid")

    @staticmethod
    def unavailable() -> str | None:
        """Why this machine cannot run the cluster, or None."""
        if os.geteuid() != 0:
            return "needs root (network namespace, bind mounts, slurmd as root)"
        missing = [t for t in TOOLS if _which(t) is None]
        if missing:
            return f"missing {', '.join(missing)}: apt-get install slurmctld slurmd slurm-client munge iproute2 util-linux"
        return None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for sub in ("state", "spool/n1", "spool/n2", "run", "log", "etc", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.conf.write_text(SLURM_CONF.format(root=self.root))
        # the node names and this machine's own name (gloo resolves it) resolve to loopback, from a file
        hosts = f"127.0.0.1 localhost\n127.0.0.1 {socket.gethostname()} n1 n2\n::1 localhost ip6-localhost\n"
        (self.root / "etc" / "hosts").write_text(hosts)
        (self.root / "etc" / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self.nsrun.write_text(NSRUN.format(ns=self.ns, root=self.root))
        self.nsrun.chmod(0o755)
        self._sh(["ip", "netns", "add", self.ns])
        self._sh(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        # a second address on lo: glibc's AI_ADDRCONFIG ignores 127.0.0.1 and slurmctld's lookups would fail
        self._sh(["ip", "-n", self.ns, "addr", "add", "10.254.254.1/32", "dev", "lo"])
        munge = self.root / "munge"
        os.chmod(munge, 0o700)
        self._sh(["mungekey", "--create", "--keyfile", str(munge / "munge.key")])
        self.run([
            "munged", "--force", f"--socket={munge / 'munge.socket'}", f"--key-file={munge / 'munge.key'}",
            f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}",
        ], check=True)
        self.run(["slurmctld", "-i", "-f", str(self.conf)], check=True)
        for node in ("n1", "n2"):
            self.run(["slurmd", "-N", node, "-f", str(self.conf)], check=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            out = self.run(["sinfo", "-h", "-N", "-o", "%T"]).stdout.split()
            if out.count("idle") == 2:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the SLURM nodes did not become idle:\n{self.logs()}")

    def stop(self) -> None:
        """Cancel what is left, let the job steps end while slurmd is alive, stop the daemons, then
        kill whatever still runs in the namespace (all of it started by this cluster)."""
        self.run(["scancel", "--user=root"])
        deadline = time.time() + 60
        while time.time() < deadline and self.run(["squeue", "-h"]).stdout.strip():
            time.sleep(0.5)
        for pid_file in self._pid_files:
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                continue
            deadline = time.time() + 30
            while time.time() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        leftover = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout.split()
        for pid in leftover:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "delete", self.ns], capture_output=True)

    # ------------------------------------------------------------------ clients
    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), *SBIN])
        env.update(extra)
        return env

    def command(self, args: list[str]) -> list[str]:
        return [str(self.nsrun), *args]

    def run(self, args: list[str], check: bool = False, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("env", self.env())
        proc = subprocess.run(self.command(args), capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{self.logs()}")
        return proc

    def job_state(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", job_id]).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def wait_for(self, job_id: str, states: set[str], timeout: float) -> dict[str, str]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job_state(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} not in {states} after {timeout} s: {self.job_state(job_id)}\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def _sh(self, args: list[str]) -> None:
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
