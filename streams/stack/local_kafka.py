"""The local Kafka broker: fetch its jars with Maven, format its KRaft storage once, run it
detached, reuse it while it runs, stop it.

Everything lives under `<data_dir>/kafka/` (see `KafkaPaths`). Only the broker of
`settings.is_local_kafka` is ever started or stopped; a remote bootstrap is only checked.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from confluent_kafka import KafkaException

from streams.config import REPO_ROOT, Settings
from streams.stack import StackError
from streams.stack.topics import admin_client, partition_counts

log = logging.getLogger(__name__)

INFRA_DIR = REPO_ROOT / "infra" / "kafka"
MIN_JAVA = 17
STAMP = ".installed"

# Brokers this process started: polling them reaps them (no zombies in long-lived test runs).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
# Size of server.log when each of those started: error reports quote only that run's lines.
_SERVER_LOG_START: dict[int, int] = {}


@dataclass(frozen=True)
class KafkaPaths:
    """Where the local broker keeps its files."""

    root: Path  # <data_dir>/kafka
    libs: Path  # libs-<version>/: the jars and the install stamp
    data: Path  # log.dirs: partitions and KRaft metadata
    cluster_id: Path  # the cluster id `data` was formatted with
    properties: Path  # server.properties, rendered from the template on every start
    pid_file: Path
    stdout_log: Path  # the JVM's stdout/stderr (startup failures land here)
    logs: Path  # log4j files: server.log, controller.log, ...


@dataclass(frozen=True)
class BrokerHandle:
    """A running local broker, as `start` found or started it."""

    pid: int
    bootstrap: str
    version: str
    reused: bool
    seconds: float  # time spent in `start`


@dataclass
class BrokerStatus:
    """What `status` sees at the configured bootstrap."""

    bootstrap: str
    managed: bool  # the local broker of this data dir (else a remote cluster)
    running: bool  # answers metadata requests
    pid: int | None = None
    version: str | None = None
    data_dir: Path | None = None
    topics: dict[str, int] = field(default_factory=dict)  # name -> partitions (no __internal)
    problem: str | None = None


def kafka_paths(settings: Settings) -> KafkaPaths:
    """The local broker's files for these settings."""
    root = Path(settings.data_dir).resolve() / "kafka"
    return KafkaPaths(
        root=root,
        libs=root / f"libs-{settings.local_kafka_version}",
        data=root / "data",
        cluster_id=root / "cluster-id",
        properties=root / "server.properties",
        pid_file=root / "broker.pid",
        stdout_log=root / "broker.out",
        logs=root / "logs",
    )


# --- Java and the jars -------------------------------------------------------------------------


def find_java() -> Path:
    """The java executable ($JAVA_HOME/bin/java, else on PATH), checked to be Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    home_java = Path(java_home) / "bin" / "java" if java_home else None
    if home_java is not None and os.access(home_java, os.X_OK):
        java = str(home_java)
    else:
        java = shutil.which("java")
    if java is None:
        raise StackError(
            f"java not found (neither $JAVA_HOME/bin/java nor on PATH): the local Kafka broker "
            f"needs Java {MIN_JAVA}+ (e.g. apt-get install openjdk-17-jre-headless)"
        )
    version = java_version(java)
    if version < MIN_JAVA:
        raise StackError(
            f"{java} is Java {version}; the local Kafka broker needs Java {MIN_JAVA}+ "
            f"(install a newer JDK or point JAVA_HOME at one)"
        )
    return Path(java)


def java_version(java: str) -> int:
    """The major version `java -version` reports (1.8 -> 8)."""
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"cannot run {java} -version: {exc}") from exc
    output = proc.stderr + proc.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if match is None:
        first = output.strip().splitlines()[0] if output.strip() else "(no output)"
        raise StackError(f"cannot tell the Java version of {java} from: {first}")
    major = int(match[1])
    return int(match[2] or 0) if major == 1 else major


def is_installed(settings: Settings) -> bool:
    """True when the jars of settings.local_kafka_version are in place."""
    return (kafka_paths(settings).libs / STAMP).is_file()


def install(settings: Settings) -> Path:
    """Fetch the broker's jars with Maven into <data_dir>/kafka/libs-<version>/ unless present.

    Checks Java first (the broker needs it anyway) and Maven only when a download is due.
    Returns the libs directory.
    """
    paths = kafka_paths(settings)
    version = settings.local_kafka_version
    find_java()
    if is_installed(settings):
        log.debug("Kafka %s is already installed in %s", version, paths.libs)
        return paths.libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "mvn not found on PATH: Maven 3.8+ fetches the Kafka jars from Maven Central "
            "(e.g. apt-get install maven)"
        )
    pom = INFRA_DIR / "pom.xml"
    if not pom.is_file():
        raise StackError(
            f"{pom} is missing: run `fundwatch infra` from a FundWatch source checkout"
        )
    with _locked(paths):
        if is_installed(settings):  # another process installed it while we waited
            return paths.libs
        partial = paths.libs.with_name(paths.libs.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(paths.libs, ignore_errors=True)  # an unfinished install has no stamp
        log.info("Fetching the Kafka %s jars with Maven into %s", version, paths.libs)
        started = time.monotonic()
        cmd = [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom), "package",
            f"-Dkafka.version={version}",
            f"-Dlibs.dir={partial}",
            f"-Dbuild.dir={paths.root / 'mvn-build'}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=paths.root)
        output = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            errors = [line for line in output.splitlines() if line.startswith("[ERROR]")]
            reason = errors[0] if errors else _tail(output, 1) or "no output"
            raise StackError(
                f"mvn failed (exit {proc.returncode}) fetching Kafka {version}: {reason}",
                details=_tail(output, 30),
            )
        jars = sorted(p.name for p in partial.glob("*.jar"))
        if not any(name.startswith("kafka_2.13-") for name in jars):
            raise StackError(f"mvn ran but {partial} has no kafka_2.13 jar", details=output)
        (partial / STAMP).write_text(f"kafka {version}\n" + "\n".join(jars) + "\n")
        partial.rename(paths.libs)
        shutil.rmtree(paths.root / "mvn-build", ignore_errors=True)
    log.info(
        "Installed Kafka %s (%d jars) in %.0f s", version, len(jars), time.monotonic() - started
    )
    return paths.libs


# --- Start, wait, stop, status -----------------------------------------------------------------


def ensure_broker(settings: Settings, timeout: float = 60.0) -> BrokerHandle | None:
    """Make the configured Kafka usable: for the local bootstrap install and start (or reuse)
    the broker; for a remote one only check that it answers (returns None)."""
    if not settings.is_local_kafka:
        check_connectivity(settings, timeout=min(timeout, 15.0))
        return None
    install(settings)
    try:
        return start(settings, timeout=timeout)
    except StackError:
        # Another data dir's broker (e.g. a second checkout) may already serve this port: if it
        # answers as Kafka, use it rather than fail; otherwise the original error stands.
        if not port_in_use(settings.local_kafka_port) or _broker_pid(kafka_paths(settings)):
            raise
        try:
            check_connectivity(settings, timeout=10.0)
        except StackError:
            pass
        else:
            owner = _port_owner(settings.local_kafka_port)
            log.warning(
                "Using the Kafka broker already listening on %s (%s), started from another "
                "data dir", _bootstrap(settings), owner or "pid unknown",
            )  # fmt: skip
            return None
        raise


def start(settings: Settings, timeout: float = 60.0) -> BrokerHandle:
    """Start this data dir's broker as a detached process, or reuse the one already running,
    and wait until it answers."""
    _require_local(settings, "start")
    paths = kafka_paths(settings)
    version = settings.local_kafka_version
    if not is_installed(settings):
        raise StackError(f"Kafka {version} is not installed: run `fundwatch infra install`")
    java = find_java()
    started = time.monotonic()
    with _locked(paths):
        pid = _broker_pid(paths)
        if pid is not None:
            running_port = _rendered_port(paths)
            if running_port != settings.local_kafka_port:
                raise StackError(
                    f"the broker of {paths.root} (pid {pid}) listens on port {running_port}, "
                    f"not {settings.local_kafka_port}: run `fundwatch infra down` first"
                )
            running_version = _running_version(pid) or version
            if running_version != version:
                log.warning(
                    "The running broker is Kafka %s, the settings say %s: run "
                    "`fundwatch infra down` and `up` again to switch",
                    running_version,
                    version,
                )
            log.info("Reusing the broker already running (pid %d) on %s", pid, _bootstrap(settings))
            wait_ready(settings, timeout=timeout, pid=pid)
            return BrokerHandle(
                pid, _bootstrap(settings), running_version, True, time.monotonic() - started
            )
        for port in (settings.local_kafka_port, settings.local_kafka_controller_port):
            if port_in_use(port):
                owner = _port_owner(port)
                raise StackError(
                    f"port {port} is in use by another process{f' ({owner})' if owner else ''}, "
                    f"not by the FundWatch broker of {paths.root}: stop it, or set "
                    f"FUNDWATCH_LOCAL_KAFKA_PORT / FUNDWATCH_LOCAL_KAFKA_CONTROLLER_PORT"
                )
        _render_properties(settings, paths)
        _format_storage(paths, java)
        pid = _spawn(settings, paths, java)
    try:
        wait_ready(settings, timeout=timeout, pid=pid)
    except StackError:
        if _alive(pid):
            log.warning("Stopping the broker (pid %d) that did not become ready", pid)
            _terminate(pid, timeout=10.0)
        paths.pid_file.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - started
    log.info(
        "Kafka %s broker (pid %d) ready on %s in %.1f s",
        version,
        pid,
        _bootstrap(settings),
        seconds,
    )
    return BrokerHandle(pid, _bootstrap(settings), version, False, seconds)


def wait_ready(settings: Settings, timeout: float = 60.0, pid: int | None = None) -> None:
    """Wait until the broker accepts connections and answers a metadata request.

    With `pid` (the local broker), fail at once when that process exits, quoting its log.
    """
    deadline = time.monotonic() + timeout
    host, port = _host_port(_bootstrap(settings))
    # Plain TCP first: librdkafka would log every refused connection while the JVM boots.
    while True:
        _fail_if_dead(settings, pid)
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
            break
        if time.monotonic() > deadline:
            raise StackError(
                f"nothing accepts connections on {host}:{port} after {timeout:.0f} s",
                details=_startup_failure(kafka_paths(settings), pid)[1] if pid else "",
            )
        time.sleep(0.2)
    admin = admin_client(settings)
    while True:
        _fail_if_dead(settings, pid)
        remaining = deadline - time.monotonic()
        try:
            admin.list_topics(timeout=max(1.0, min(5.0, remaining)))
            return
        except KafkaException as exc:
            if remaining <= 0:
                raise StackError(
                    f"Kafka on {host}:{port} accepts connections but does not answer metadata "
                    f"requests after {timeout:.0f} s: {exc.args[0].str()}",
                    details=_startup_failure(kafka_paths(settings), pid)[1] if pid else "",
                ) from exc
        time.sleep(0.2)


def check_connectivity(settings: Settings, timeout: float = 15.0) -> None:
    """Raise StackError unless the configured cluster answers a metadata request."""
    try:
        metadata = admin_client(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise StackError(
            f"Kafka at {settings.kafka_bootstrap} does not answer: {exc.args[0].str()}"
        ) from exc
    log.info("Kafka at %s answers (%d brokers)", settings.kafka_bootstrap, len(metadata.brokers))


def stop(settings: Settings, timeout: float = 30.0) -> int | None:
    """Stop this data dir's broker: SIGTERM, wait up to `timeout` s, then SIGKILL (with a
    warning). Returns the pid stopped, or None when none was running."""
    _require_local(settings, "stop")
    paths = kafka_paths(settings)
    with _locked(paths):
        pid = _broker_pid(paths)
        if pid is None:
            log.info("No local broker is running for %s", paths.root)
            return None
        log.info("Stopping the local broker (pid %d)", pid)
        _terminate(pid, timeout)
        paths.pid_file.unlink(missing_ok=True)
    return pid


def status(settings: Settings, timeout: float = 5.0) -> BrokerStatus:
    """Whether the configured Kafka runs and answers, and its topics' partition counts."""
    st = BrokerStatus(
        bootstrap=settings.kafka_bootstrap, managed=settings.is_local_kafka, running=False
    )
    if st.managed:
        paths = kafka_paths(settings)
        st.data_dir = paths.root
        st.pid = _broker_pid(paths)
        if st.pid is None:
            port = settings.local_kafka_port
            if port_in_use(port):
                owner = _port_owner(port)
                st.problem = (
                    f"port {port} is held by another process{f' ({owner})' if owner else ''}"
                )
            return st
        st.version = _running_version(st.pid)
        running_port = _rendered_port(paths)
        if running_port != settings.local_kafka_port:
            st.problem = f"the broker (pid {st.pid}) listens on port {running_port}"
            return st
    try:
        st.topics = partition_counts(settings, timeout=timeout)
        st.running = True
    except KafkaException as exc:
        st.problem = f"not answering on {settings.kafka_bootstrap}: {exc.args[0].str()}"
    return st


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something holds `port` on `host` (listening or merely bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def new_cluster_id() -> str:
    """A KRaft cluster id, as `kafka-storage random-uuid` makes them (22 url-safe base64 chars)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # would read as a command-line option
            return cluster_id


# --- internals ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(paths: KafkaPaths) -> Iterator[None]:
    """An exclusive lock on the data dir (concurrent `infra up`s, parallel test sessions).
    Not re-entrant: never nest it."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _require_local(settings: Settings, action: str) -> None:
    if not settings.is_local_kafka:
        raise StackError(
            f"cannot {action} {settings.kafka_bootstrap}: FundWatch only manages its local "
            f"broker (127.0.0.1:{settings.local_kafka_port})"
        )


def _bootstrap(settings: Settings) -> str:
    return (
        f"127.0.0.1:{settings.local_kafka_port}"
        if settings.is_local_kafka
        else settings.kafka_bootstrap
    )


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    return host.strip("[]"), int(port)


def _log_opts(paths: KafkaPaths) -> list[str]:
    return [
        f"-Dlog4j.configuration=file:{INFRA_DIR / 'log4j.properties'}",
        f"-Dkafka.logs.dir={paths.logs}",
    ]


def _render_properties(settings: Settings, paths: KafkaPaths) -> None:
    template_path = INFRA_DIR / "server.properties.template"
    if not template_path.is_file():
        raise StackError(f"{template_path} is missing: run from a FundWatch source checkout")
    text = Template(template_path.read_text()).substitute(
        broker_port=settings.local_kafka_port,
        controller_port=settings.local_kafka_controller_port,
        log_dirs=paths.data,
    )
    paths.properties.write_text(text)


def _rendered_port(paths: KafkaPaths) -> int | None:
    """The client port in the server.properties the running broker was started with."""
    with contextlib.suppress(OSError):
        match = re.search(
            r"^advertised\.listeners=PLAINTEXT://[^:]+:(\d+)", paths.properties.read_text(), re.M
        )
        if match:
            return int(match[1])
    return None


def _format_storage(paths: KafkaPaths, java: Path) -> None:
    """Format the KRaft storage once per data dir, keeping the cluster id in a file."""
    if (paths.data / "meta.properties").is_file():
        return
    if paths.cluster_id.is_file():
        cluster_id = paths.cluster_id.read_text().strip()
    else:
        cluster_id = new_cluster_id()
        paths.cluster_id.write_text(cluster_id + "\n")
    log.info("Formatting the KRaft storage in %s (cluster id %s)", paths.data, cluster_id)
    paths.logs.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(java), *_log_opts(paths), "-cp", f"{paths.libs}/*", "kafka.tools.StorageTool",
        "format", "-t", cluster_id, "-c", str(paths.properties), "--ignore-formatted",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=paths.root)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise StackError(
            f"formatting {paths.data} failed (exit {proc.returncode}): {_tail(output, 1)}",
            details=_tail(output, 30),
        )


def _spawn(settings: Settings, paths: KafkaPaths, java: Path) -> int:
    """Start the broker in its own session (it outlives the CLI) and write the pid file."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(java), f"-Xmx{settings.kafka_heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true", *_log_opts(paths), "-cp", f"{paths.libs}/*",
        "kafka.Kafka", str(paths.properties),
    ]  # fmt: skip
    server_log = paths.logs / "server.log"
    server_log_size = server_log.stat().st_size if server_log.exists() else 0
    with open(paths.stdout_log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    _SERVER_LOG_START[proc.pid] = server_log_size
    paths.pid_file.write_text(f"{proc.pid}\n")
    log.info(
        "Started Kafka %s (pid %d) on %s; logs in %s",
        settings.local_kafka_version,
        proc.pid,
        _bootstrap(settings),
        paths.logs,
    )
    return proc.pid


def _broker_pid(paths: KafkaPaths) -> int | None:
    """The pid of this data dir's running broker; removes a stale pid file."""
    try:
        pid = int(paths.pid_file.read_text().strip())
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        log.warning("Removing the unreadable pid file %s", paths.pid_file)
        paths.pid_file.unlink(missing_ok=True)
        return None
    if _alive(pid) and _is_broker_of(pid, paths):
        return pid
    log.warning("Removing the stale pid file %s (pid %d is not our broker)", paths.pid_file, pid)
    paths.pid_file.unlink(missing_ok=True)
    return None


def _cmdline(pid: int) -> str:
    """The command line of `pid` ("" when it does not exist or cannot be read)."""
    proc_file = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return proc_file.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return ""
    result = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True
    )
    return result.stdout.strip()


def _is_broker_of(pid: int, paths: KafkaPaths) -> bool:
    cmdline = _cmdline(pid)
    return "kafka.Kafka" in cmdline and str(paths.properties) in cmdline


def _running_version(pid: int) -> str | None:
    match = re.search(r"/libs-([^/\s]+)/\*", _cmdline(pid))
    return match[1] if match else None


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to `timeout` s, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_exit(pid, timeout):
        log.info("The broker (pid %d) stopped", pid)
        return
    log.warning(
        "The broker (pid %d) did not stop within %.0f s: killing it (SIGKILL)", pid, timeout
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_exit(pid, 10.0):
        raise StackError(f"the broker (pid {pid}) survived SIGKILL")


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    _CHILDREN.pop(pid, None)
    return True


def _fail_if_dead(settings: Settings, pid: int | None) -> None:
    if pid is not None and not _alive(pid):
        paths = kafka_paths(settings)
        paths.pid_file.unlink(missing_ok=True)
        reason, excerpt = _startup_failure(paths, pid)
        raise StackError(
            f"the broker (pid {pid}) exited during startup: {reason} (logs in {paths.logs})",
            details=excerpt,
        )


_PROBLEM = re.compile(r"\b(ERROR|FATAL|Error|Exception)\b")


def _startup_failure(paths: KafkaPaths, pid: int | None) -> tuple[str, str]:
    """The likely reason a broker failed to start, and an excerpt of this run's logs."""
    out_lines: list[str] = []
    with contextlib.suppress(OSError):  # this run's output follows the last '--- ' marker
        out_lines = paths.stdout_log.read_text(errors="replace").rsplit("\n--- ", 1)[-1]
        out_lines = out_lines.splitlines()[1:]
    server_log = paths.logs / "server.log"
    log_lines: list[str] = []
    with contextlib.suppress(OSError), server_log.open("rb") as handle:
        start = _SERVER_LOG_START.get(pid or -1, 0)
        handle.seek(start if start <= server_log.stat().st_size else 0)
        log_lines = handle.read().decode(errors="replace").splitlines()[-400:]

    reason, log_lines = _first_problem(log_lines)
    if not reason:
        reason, _ = _first_problem(out_lines)
    excerpt = [
        f"==> {path} <==\n" + "\n".join(lines)
        for path, lines in ((paths.stdout_log, out_lines[-15:]), (server_log, log_lines[:15]))
        if lines
    ]
    return (reason[:300] or "no error in its logs"), "\n".join(excerpt)


def _first_problem(lines: list[str]) -> tuple[str, list[str]]:
    """The first ERROR/exception line (plus the message on the next line, as in 'ERROR ...' then
    'java.lang.OutOfMemoryError: ...') and the lines from it on (all lines when none)."""
    index = next((i for i, line in enumerate(lines) if _PROBLEM.search(line)), None)
    if index is None:
        return "", lines[-15:]
    reason = re.sub(r"^\[[^]]*\]\s*", "", lines[index].strip())  # drop the timestamp
    follow = lines[index + 1] if index + 1 < len(lines) else ""
    if follow.strip() and not follow[:1].isspace() and not follow.startswith("["):
        reason += f": {follow.strip()}"
    return reason, lines[index:]


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _port_owner(port: int) -> str:
    """'pid N: <command>' of the process holding a TCP port, when /proc tells (best effort)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                # 0A = LISTEN, 07 = CLOSE (bound, not listening)
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] in {"0A", "07"}:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return ""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        pid = int(fd_dir.parent.name)
                        return f"pid {pid}: {_cmdline(pid)[:120]}"
    return ""
