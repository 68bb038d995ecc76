"""`peftbench` command lines, each in a process of its own, without paying the interpreter's start
and the imports of torch, transformers, peft and Hydra for each: about 6 s on a Zen 4 core and 13 s
on a 2.45 GHz Zen 3 core, most of a bad-input case, a tiny run or a small report.

One driver process imports the command line and everything a run imports, then forks a child per
command line. The child has its own Hydra state, working folder, stdout/stderr files and exit
status; an exception that escapes `peftbench.cli.main` prints its traceback to the child's stderr
as the interpreter would (a SystemExit with a message prints the message), so a test that asserts
"one line, no traceback" can fail exactly as it would on a real start. What differs from a real
start: the modules were imported under the driver's environment, so a variable read at import
time (HF_HUB_OFFLINE, PYTHONWARNINGS) is the driver's; a call's `env` reaches what the command
reads while it runs. The driver has run no torch operation before it forks, so no OpenMP pool is
copied into a child. A command that runs past `timeout` kills the driver and fails the test.
`start` forks a command detached, to run beside another or to be killed (in a process group of
its own). Each child starts with the SIGINT and SIGTERM dispositions of a fresh interpreter in a
terminal, so that a sweep interrupted by either is what a user's would be. Tests that are about the
start itself (`--version`, the installed script) start real processes.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]

DRIVER = r"""
import json, os, signal, sys, traceback
import peftbench.cli as cli
import peftbench.experiments.app  # torch, transformers, Hydra: imported once, before any fork
import peftbench.analysis.report  # pandas, scipy, matplotlib: what `peftbench report` and `reproduce` read with
from peftbench.methods import registry
registry.available()  # every method module, with peft and bitsandbytes
for line in sys.stdin:
    job = json.loads(line)
    if "wait" in job:  # a detached child's end
        try:
            _, status = os.waitpid(job["wait"], 0)
            reply = {"rc": os.waitstatus_to_exitcode(status)}
        except ChildProcessError:  # not this driver's child, or already waited for
            reply = {"error": f"pid {job['wait']} is no running child of the driver"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        continue
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if job.get("new_session"):
                os.setsid()
            # the dispositions a fresh interpreter started from a terminal has, whatever the
            # driver inherited from pytest: Ctrl-C raises KeyboardInterrupt, SIGTERM ends
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.chdir(job["cwd"])
            os.environ.clear()
            os.environ.update(job["env"])
            for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
                f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            sys.argv = ["peftbench", *job["args"]]
            try:
                code = cli.main(job["args"])
            except SystemExit as e:
                if e.code is not None and not isinstance(e.code, int):
                    print(e.code, file=sys.stderr)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code if isinstance(code, int) else 1)
    if job.get("detach"):  # the caller waits later (a "wait" line); meanwhile more jobs may start
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
        continue
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    sys.stdout.write(json.dumps({"rc": rc}) + "\n")
    sys.stdout.flush()
"""


class ForkedCli:
    """Run `peftbench ARGS` as forks of one warm driver; `run` returns a CompletedProcess."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or os.environ)
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=ROOT, env=self.env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.tmp = Path(tempfile.mkdtemp(prefix="peftbench-forked-cli-"))
        self.n = 0

    def run(self, args: Sequence[str], *, cwd: Path = ROOT, env: Mapping[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        # in a session of its own, so that a command past its timeout is stopped with all it
        # started (torchrun and its ranks), not left running beside the tests that follow
        return self.start(args, cwd=cwd, env=env, new_session=True).wait(timeout)

    def start(self, args: Sequence[str], *, cwd: Path = ROOT, env: Mapping[str, str] | None = None,
              new_session: bool = False) -> "Forked":
        """Fork `peftbench ARGS` and return while it runs (the caller may start more): `Forked.wait`
        collects it. `new_session`: its own process group, as `start_new_session` gives a Popen,
        so that a signal to the group reaches the command and what it started."""
        forked = self._fork(args, cwd, env, detach=True, new_session=new_session)
        reply = self._reply(30, args)
        forked.pid, forked.group = reply["pid"], reply["pid"] if new_session else None
        return forked

    def _fork(self, args: Sequence[str], cwd: Path, env: Mapping[str, str] | None, *, detach: bool, new_session: bool) -> "Forked":
        assert self.proc.poll() is None, "the forked-CLI driver has exited"
        self.n += 1
        out, err = self.tmp / f"{self.n}.out", self.tmp / f"{self.n}.err"
        self._send({"args": list(args), "cwd": str(cwd), "env": dict(env or self.env), "stdout": str(out), "stderr": str(err),
                    "detach": detach, "new_session": new_session})
        return Forked(self, list(args), out, err)

    def _send(self, job: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()

    def _reply(self, timeout: float, args: Sequence[str], group: int | None = None) -> dict:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            if group is not None:
                stop_group(group)
            self.proc.kill()
            raise TimeoutError(f"peftbench {' '.join(args)} ran past {timeout} s in the forked-CLI driver")
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError("the forked-CLI driver died")
        return json.loads(reply)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def live_members(group: int) -> list[int]:
    """The processes of a process group that still run (zombies left out)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            pids.append(int(stat.parent.name))
    return pids


def stop_group(group: int, grace_s: float = 30) -> None:
    """SIGTERM to a command's process group, then SIGKILL to what is left after `grace_s`. SIGTERM
    first: torchrun starts its ranks each in a session of its own, and only it can stop them."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while sig == signal.SIGTERM and live_members(group) and time.monotonic() < deadline:
            time.sleep(0.2)


class Forked:
    """One command forked detached (`ForkedCli.start`)."""

    def __init__(self, cli: ForkedCli, args: list[str], out: Path, err: Path) -> None:
        self.cli, self.args, self.out, self.err = cli, args, out, err
        self.pid: int | None = None
        self.group: int | None = None  # its process group, when it has one of its own
        self.result: subprocess.CompletedProcess | None = None

    def running(self) -> bool:
        """Whether the command still runs (an ended child the driver has not reaped is a zombie)."""
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    def wait(self, timeout: float = 300) -> subprocess.CompletedProcess:
        if self.result is None:
            self.cli._send({"wait": self.pid})
            self._collect(self.cli._reply(timeout, self.args, self.group))
        return self.result

    def _collect(self, reply: dict) -> subprocess.CompletedProcess:
        if "error" in reply:
            raise RuntimeError(f"the forked-CLI driver: {reply['error']}")
        self.result = subprocess.CompletedProcess(["peftbench", *self.args], reply["rc"], self.out.read_text(), self.err.read_text())
        return self.result
