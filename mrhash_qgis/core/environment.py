"""The engine's private Python environment: find a base Python, build a venv with the engine's
pinned requirements and the engine bundled with the plugin, check that it answers, and tell
later whether it is ready, half-built or made for another plugin version.

Standard library only: the plugin's settings and set-up task use it inside QGIS, and
`python3 -m mrhash_qgis.setup_engine` uses it headless with only the unzipped plugin on
PYTHONPATH. Nothing here ever runs pip in QGIS's own interpreter.

An environment counts as working only once its stamp (`mrhash-engine.json`) is written, and
that happens last, after the engine answered a `doctor` request: a cancelled, failed or
interrupted set-up leaves a folder without a stamp, shown as "incomplete", never "ready".
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mrhash_qgis.contract.choices import DEVICES
from mrhash_qgis.contract.protocol import DoctorResult

PLUGIN_DIR = Path(__file__).resolve().parents[1]
STAMP_NAME = "mrhash-engine.json"
LOG_NAME = "setup.log"
ENGINE_PACKAGES = ("mrhash", "mrhash_contract")  # what the engine wheel holds
SUPPORTED_PYTHONS = ((3, 10), (3, 14))  # torch, faiss-cpu and rasterio publish wheels for these
BUILD_DEVICES = DEVICES  # the PyTorch build: for the devices jobs can ask for
# Free space a set-up needs in the target folder (measured sizes + pip's unpacking room).
REQUIRED_FREE_BYTES = {"cpu": 2_500_000_000, "cuda": 9_000_000_000}
# PyTorch's own wheel indexes: the CPU build is a fraction of the size of PyPI's Linux/Windows
# default (a CUDA build on Linux); Windows has no CUDA build on PyPI.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
# Variables QGIS sets for its own Python/GDAL/PROJ: the engine brings its own.
ENV_NOT_INHERITED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "GDAL_DATA", "PROJ_LIB",
                     "PROJ_DATA", "GDAL_DRIVER_PATH", "QGIS_PREFIX_PATH")

NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console flashing up on Windows

Progress = Callable[[float, str], None]
IsCancelled = Callable[[], bool]


class SetupError(Exception):
    """A set-up failure with a stable code and a message that says what to do."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


# -- what the plugin carries -----------------------------------------------------------------
def plugin_version() -> str:
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(PLUGIN_DIR / "metadata.txt", encoding="utf-8")
    return metadata.get("general", "version", fallback="unknown")


def engine_source() -> Path:
    """The engine shipped with the plugin (`engine/` inside the zip), or a checkout's."""
    for folder in (PLUGIN_DIR / "engine", PLUGIN_DIR.parent / "engine"):
        if all((folder / part).is_file() for part in ("mrhash/__init__.py", "requirements.txt")):
            return folder
    raise SetupError("no_engine_source", f"the plugin in {PLUGIN_DIR} carries no engine "
                     "(engine/mrhash and engine/requirements.txt): reinstall the plugin zip")


def engine_version(source: Path) -> str:
    text = (source / "mrhash" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else "unknown"


def requirements_digest(source: Path) -> str:
    return hashlib.sha256((source / "requirements.txt").read_bytes()).hexdigest()[:16]


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without QGIS's Python/GDAL/PROJ variables."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_NOT_INHERITED}
    env.update({"PYTHONUNBUFFERED": "1", "PIP_NO_INPUT": "1"})
    env.update(extra or {})
    return env


# -- base Python -----------------------------------------------------------------------------
@dataclass(frozen=True)
class BasePython:
    path: str
    version: str = ""
    problem: str = ""  # empty when usable


def default_target(profile: Path) -> Path:
    """Where the plugin keeps its private engine environment in a QGIS profile folder."""
    return profile / "mrhash" / "engine"


def env_python(target: Path) -> Path:
    return target / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _python_candidates() -> list[str]:
    """Where a Python able to make a venv usually is: first the one QGIS itself runs on (found
    by its prefix: inside QGIS `sys.executable` is the QGIS program on Windows and macOS, and
    whatever `python3` is on the PATH on Linux), then the usual places and the PATH."""
    names = ["python.exe", "python3.exe"] if sys.platform == "win32" else ["python3", "python"]
    found: list[str] = []
    for prefix in dict.fromkeys((sys.exec_prefix, sys.base_exec_prefix)):
        for sub in ("", "bin", "Scripts", "../../bin"):
            found += [str(Path(prefix, sub, name)) for name in names]
    if Path(sys.executable).name.lower().startswith("python"):
        found.append(sys.executable)
    if sys.platform == "darwin":
        found += ["/opt/homebrew/bin/python3", "/usr/local/bin/python3",
                  "/Library/Frameworks/Python.framework/Versions/Current/bin/python3"]
    found += [p for p in (shutil.which(n) for n in names) if p]
    if sys.platform.startswith("linux"):
        found.append("/usr/bin/python3")
    unique: list[str] = []
    for path in found:
        resolved = os.path.normpath(path)
        if resolved not in unique and Path(resolved).is_file():
            unique.append(resolved)
    return unique


_PROBE = ("import json, sys, venv; import ensurepip; "
          "print(json.dumps({'version': list(sys.version_info[:3])}))")


def probe_python(path: str) -> BasePython:
    """Can `path` make the engine's environment? (runs, supported version, has venv)"""
    if not path or not Path(path).is_file():
        return BasePython(path, problem=f"{path or '(empty)'} is not a file")
    try:
        done = subprocess.run([path, "-I", "-c", _PROBE], capture_output=True, text=True,
                              timeout=60, env=clean_environment(),
                              creationflags=NO_WINDOW)
    except (OSError, subprocess.SubprocessError) as error:
        return BasePython(path, problem=f"{path} does not run: {error}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if "ensurepip" in done.stderr or "venv" in done.stderr:
            return BasePython(path, problem=f"{path} cannot create environments ({last}); on "
                              "Debian/Ubuntu install the python3-venv package")
        return BasePython(path, problem=f"{path} is not a usable Python ({last})")
    try:
        major, minor, micro = json.loads(done.stdout.strip().splitlines()[-1])["version"]
    except (ValueError, KeyError, IndexError):
        return BasePython(path, problem=f"{path} is not a usable Python (unexpected answer)")
    version = f"{major}.{minor}.{micro}"
    low, high = SUPPORTED_PYTHONS
    if not low <= (major, minor) <= high:
        return BasePython(path, version, f"{path} is Python {version}; the engine needs "
                          f"Python {low[0]}.{low[1]} to {high[0]}.{high[1]}")
    return BasePython(path, version)


def find_base_python(preferred: str = "") -> BasePython:
    """The first usable base Python (`preferred` only, when given); SetupError listing what was
    tried and why each failed when none is."""
    candidates = [preferred] if preferred else _python_candidates()
    tried = [probe_python(path) for path in candidates]
    for python in tried:
        if not python.problem:
            return python
    if preferred:
        raise SetupError("no_python", f"The base Python you chose cannot be used: "
                         f"{tried[0].problem}. Choose another one (Settings › Base Python), or "
                         "leave it empty to let MrHash find one.")
    reasons = "; ".join(p.problem for p in tried) or "no Python found on this computer"
    raise SetupError("no_python", "No Python usable for the MrHash engine was found "
                     f"({reasons}). Install Python {SUPPORTED_PYTHONS[0][0]}."
                     f"{SUPPORTED_PYTHONS[0][1]} or newer (python.org, or your system's "
                     "packages) and press Set up again, or choose it with Use another Python.")


# -- which torch -----------------------------------------------------------------------------
def nvidia_gpu() -> str:
    """The NVIDIA GPU's name when one is present (driver installed), else ''."""
    smi = shutil.which("nvidia-smi") or (
        r"C:\Windows\System32\nvidia-smi.exe" if sys.platform == "win32" else None)
    if smi and Path(smi).exists():
        try:
            done = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20,
                                  creationflags=NO_WINDOW)
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return ""


def build_device(requested: str) -> str:
    """`auto` -> cuda when an NVIDIA GPU is present (never on macOS), else cpu."""
    if requested not in BUILD_DEVICES:
        raise SetupError("bad_option", f"device {requested!r}: use one of "
                         f"{', '.join(BUILD_DEVICES)}")
    if requested == "auto":
        return "cuda" if sys.platform != "darwin" and nvidia_gpu() else "cpu"
    return requested


def torch_index(device: str) -> str:
    """PyTorch's index for this build and platform ('' = the default index serves it)."""
    if sys.platform == "darwin":
        return ""
    if device == "cpu":
        return TORCH_CPU_INDEX
    return TORCH_CUDA_INDEX if sys.platform == "win32" else ""


def reachable(url: str, timeout: float = 8.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 (any failure means: do not rely on it)
        return False


# -- options and state -----------------------------------------------------------------------
@dataclass(frozen=True)
class SetupOptions:
    target: Path
    python: str = ""       # base Python; '' = find one
    device: str = "auto"   # the torch build: auto | cpu | cuda
    find_links: str = ""   # a folder of wheels: install offline from it alone
    index_url: str = ""    # a package index (an organisation's mirror) instead of the default
    fresh: bool = False    # delete what is in `target` first (Set up), or keep it (Repair)


@dataclass
class EnvState:
    """`state`: missing | incomplete | outdated | ready."""

    target: str
    state: str
    message: str
    stamp: dict = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.state in ("ready", "outdated")

    @property
    def python(self) -> str:
        return str(env_python(Path(self.target)))


def read_stamp(target: Path) -> dict:
    try:
        stamp = json.loads((target / STAMP_NAME).read_text(encoding="utf-8"))
        return stamp if isinstance(stamp, dict) else {}
    except (OSError, ValueError):
        return {}


def inspect_env(target: Path) -> EnvState:
    """What is in `target`, without running anything."""
    if not target.exists():
        return EnvState(str(target), "missing", "The engine is not set up yet.")
    stamp = read_stamp(target)
    if not stamp or not env_python(target).is_file():
        return EnvState(str(target), "incomplete", "The engine's set-up did not finish "
                        "(cancelled or failed): press Set up the engine.", stamp)
    try:
        source = engine_source()
        wanted = (engine_version(source), requirements_digest(source))
    except SetupError:
        wanted = (stamp.get("engine"), stamp.get("requirements"))
    if (stamp.get("engine"), stamp.get("requirements")) != wanted:
        return EnvState(str(target), "outdated", f"The engine environment was made for MrHash "
                        f"{stamp.get('engine')}; this plugin carries {wanted[0]}: press Repair.",
                        stamp)
    return EnvState(str(target), "ready", f"Engine environment ready ({stamp.get('device')}, "
                    f"torch {stamp.get('torch')}, Python {stamp.get('python_version')}).", stamp)


def remove_env(target: Path) -> None:
    """Delete an engine environment; refuses a folder that is not one (never a wrong rmtree)."""
    if not target.exists():
        return
    if not ((target / STAMP_NAME).exists() or (target / "pyvenv.cfg").exists()
            or (target / LOG_NAME).exists()):
        raise SetupError("not_an_environment", f"{target} is not a MrHash engine environment "
                         "(no pyvenv.cfg or mrhash-engine.json): not removed")
    shutil.rmtree(target)


# -- the set-up ------------------------------------------------------------------------------
class _Run:
    """One set-up: the log file, progress and cancel shared by its steps."""

    def __init__(self, target: Path, progress: Progress | None, is_cancelled: IsCancelled | None,
                 echo: Callable[[str], None] | None):
        self.target = target
        self.progress = progress or (lambda _f, _m: None)
        self.is_cancelled = is_cancelled or (lambda: False)
        self.echo = echo
        target.mkdir(parents=True, exist_ok=True)
        self.log_path = target / LOG_NAME
        self.log_file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self.tail: list[str] = []

    def log(self, line: str) -> None:
        try:
            self.log_file.write(line + "\n")
            self.log_file.flush()
        except OSError:  # a full disk must not hide the failure being reported
            pass
        self.tail = (self.tail + [line])[-40:]
        if self.echo:
            self.echo(line)

    def step(self, fraction: float, message: str) -> None:
        self.check_cancelled()
        self.log(f"[{fraction:4.0%}] {message}")
        self.progress(fraction, message)

    def check_cancelled(self) -> None:
        if self.is_cancelled():
            raise SetupError("cancelled", "The engine set-up was cancelled; the environment "
                             "is incomplete and will not be used. Press Set up to start again.")

    def close(self) -> None:
        self.log_file.close()

    def command(self, args: list[str], span: tuple[float, float], expected_lines: int,
                what: str, timeout_s: float = 3600.0,
                milestones: dict[str, float] | None = None) -> str:
        """Run `args`, logging each output line; progress moves through `span` with the
        "Collecting"/"Processing" lines seen (out of about `expected_lines`) and jumps to the
        fraction of a line starting with a `milestones` key; cancel kills the process.
        Returns the output."""
        self.log("$ " + " ".join(args))
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                                   errors="replace", env=clean_environment(), cwd=self.target,
                                   creationflags=NO_WINDOW)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for raw in process.stdout:
                lines.put(raw.rstrip())
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name="mrhash-setup-output").start()
        output: list[str] = []
        start, seen, finished, fraction = time.monotonic(), 0, False, span[0]
        said, said_at = "", start  # the last words shown, and when: silence gets a clock
        try:
            while not finished:
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    line = ""
                if line is None:
                    finished = True
                elif line:
                    output.append(line)
                    self.log(line)
                    marks = [mark for prefix, mark in (milestones or {}).items()
                             if line.startswith(prefix)]
                    if marks or line.startswith(("Collecting", "Processing")):
                        seen += 1
                        lo, hi = span
                        fraction = max([fraction, lo + (hi - lo) * min(1.0, seen / expected_lines),
                                        *marks])
                    words = pip_words(line)
                    if words or marks:
                        said, said_at = f"{what}: {words or line[:90]}", time.monotonic()
                        self.progress(fraction, said)
                elif said and time.monotonic() - said_at >= 5:
                    # pip says nothing while it unpacks a large wheel: show it is working
                    self.progress(fraction, f"{said} ({time.monotonic() - said_at:.0f} s)")
                if self.is_cancelled() or time.monotonic() - start > timeout_s:
                    _stop(process)
                    self.check_cancelled()
                    raise SetupError("timeout", f"{what} took more than {timeout_s:.0f} s "
                                     f"and was stopped; see {self.log_path}")
            code = process.wait()
        finally:
            _stop(process)
        text = "\n".join(output)
        if code != 0:
            raise _explain_failure(what, text, self.log_path)
        return text


_PIP_NAME = re.compile(r"^(?:Collecting|Downloading|Processing|Using cached)\s+(?:\S*/)?"
                       r"([A-Za-z0-9_.\-]+?)(?:[-=<>!~\[ ]|$).*?(?:\(([\d.]+ [kMG]B)\))?$")


def pip_words(line: str) -> str:
    """One pip output line as the set-up says it ("downloading torch (187.2 MB)",
    "installing 42 packages"); "" for lines that say nothing to a user."""
    text = line.strip()
    if text.startswith("Installing collected packages:"):
        names = [n for n in text.split(":", 1)[1].split(",") if n.strip()]
        return f"installing {len(names)} packages (the largest take a minute)"
    if text.startswith("Successfully installed"):
        return "installed"
    match = _PIP_NAME.match(text)
    if match is None:
        return ""
    name, size = match.group(1), match.group(2)
    verb = "downloading" if text.startswith("Downloading") else "getting"
    return f"{verb} {name}" + (f" ({size})" if size else "")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


NETWORK_FAILURES = (r"NewConnectionError|Failed to establish|Name or service not known|"
                    r"Temporary failure in name resolution|Max retries exceeded|ConnectTimeout|"
                    r"getaddrinfo failed|Network is unreachable|ProxyError|Connection refused")


def _explain_failure(what: str, output: str, log_path: Path) -> SetupError:
    """The first thing a user can act on in a failed command's output."""
    tail = "\n".join(output.splitlines()[-6:])
    if re.search(r"No space left on device|Errno 28|ENOSPC", output):
        return SetupError("disk_full", f"{what} failed: the disk is full. Free some space (the "
                          "environment needs about 2.5 GB for the CPU build) and press Set up "
                          f"again. Details: {log_path}")
    if re.search(NETWORK_FAILURES, output):
        return SetupError("no_network", f"{what} failed: the package index cannot be reached "
                          "(no network or a proxy). Give a wheel folder (offline) or your "
                          f"organisation's index URL in MrHash › Settings. Details: {log_path}")
    missing = re.search(r"No matching distribution found for ([^\s]+)", output)
    if missing:
        return SetupError("package_unavailable", f"{what} failed: {missing.group(1)} cannot be "
                          "found in the package sources given (no network, a wheel folder "
                          "without it, or no build for this Python/platform). Add it to the "
                          "wheel folder, give an index URL in Settings, or connect to the "
                          f"internet. Details: {log_path}")
    if "ensurepip" in output:
        return SetupError("no_venv", f"{what} failed: this Python cannot create environments "
                          "(on Debian/Ubuntu install python3-venv). Details: " + str(log_path))
    return SetupError("command_failed", f"{what} failed:\n{tail}\nDetails: {log_path}")


def _check_space(target: Path, device: str) -> None:
    needed = REQUIRED_FREE_BYTES[device]
    existing = target if target.exists() else next(p for p in target.parents if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise SetupError("disk_full", f"Not enough free space in {existing}: the engine "
                         f"environment ({device} build) needs about {needed / 1e9:.1f} GB, "
                         f"{free / 1e9:.2f} GB are free. Free some space or choose another "
                         "folder.")


def _check_writable(target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=target, prefix=".write-test-", delete=True)  # noqa: SIM115
        probe.close()
    except OSError as error:
        raise SetupError("not_writable", f"Cannot write to {target} ({error.strerror or error}): "
                         "choose a folder you can write to.") from None


def _clear(target: Path) -> None:
    """Empty `target` except its set-up log (a fresh set-up keeps the history of failures)."""
    for child in target.iterdir():
        if child.name == LOG_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def source_arguments(options: SetupOptions, device: str, log: Callable[[str], None]) -> list[str]:
    """pip's package sources: the wheel folder alone (offline), the given index, or the default
    index plus PyTorch's index for the chosen build when it can be reached."""
    if options.find_links:
        folder = Path(options.find_links)
        if not folder.is_dir():
            raise SetupError("bad_option", f"the wheel folder {folder} does not exist")
        return ["--no-index", "--find-links", str(folder)]
    if options.index_url:
        return ["--index-url", options.index_url]
    index = torch_index(device)
    if index and reachable(index + "/"):
        return ["--extra-index-url", index]
    if index:
        log(f"PyTorch's wheel index {index} cannot be reached: torch comes from the default "
            "package index")
    return []


def engine_wheel(source: Path, folder: Path) -> Path:
    """A wheel of the bundled engine (pure Python), made with the standard library so that the
    set-up needs no build tools and works offline; it gives the environment `mrhash` and the
    contract it shares with the plugin, `mrhash_contract`."""
    version = engine_version(source)
    dist_info = f"mrhash-{version}.dist-info"
    path = folder / f"mrhash-{version}-py3-none-any.whl"
    files: dict[str, bytes] = {}
    for package in ENGINE_PACKAGES:
        for file in sorted((source / package).rglob("*.py")):
            files[file.relative_to(source).as_posix()] = file.read_bytes()
    files[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: mrhash\nVersion: {version}\n"
                                      "Summary: MrHash engine (bundled with the QGIS plugin)\n"
                                      ).encode()
    files[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: mrhash_qgis\n"
                                   b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{dist_info}/entry_points.txt"] = b"[console_scripts]\nmrhash = mrhash.app.cli:main\n"
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{dist_info}/RECORD"] = ("\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def ask_engine(python: Path, method: str = "doctor", device: str = "cpu",
               timeout_s: float = 600.0, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> dict:
    """Start `python -m mrhash serve`, send one request, return its result (SetupError when the
    engine fails to start or answers an error). The proof that an environment works."""
    requests = "".join(json.dumps(r) + "\n" for r in (
        {"id": "1", "method": method, "params": {}}, {"id": "2", "method": "shutdown"}))
    try:
        done = subprocess.run([str(python), "-m", "mrhash", "serve", "--device", device],
                              input=requests, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=timeout_s, cwd=cwd or PLUGIN_DIR,
                              env=env or clean_environment(),
                              creationflags=NO_WINDOW)
    except (OSError, subprocess.SubprocessError) as error:
        raise SetupError("engine_failed", f"the engine in {python} did not answer: {error}") \
            from None
    for line in done.stdout.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("event") == "failed" or message.get("id") == "1":
            error = message.get("error")
            if error:
                raise SetupError(error.get("code", "engine_failed"),
                                 f"the engine does not work: {error.get('message')}")
            if "result" in message:
                return message["result"]
    tail = "\n".join(done.stderr.strip().splitlines()[-8:])
    raise SetupError("engine_failed", f"the engine in {python} did not answer "
                     f"(exit code {done.returncode}):\n{tail}")


def setup_engine(options: SetupOptions, progress: Progress | None = None,
                 is_cancelled: IsCancelled | None = None,
                 echo: Callable[[str], None] | None = None) -> dict:
    """Build (or repair) the environment in `options.target`; return its stamp. Raises
    SetupError; whatever happens, the stamp exists only if the engine answered."""
    target = Path(options.target).expanduser().absolute()
    source = engine_source()
    _check_writable(target)
    (target / STAMP_NAME).unlink(missing_ok=True)  # from here on the folder is "incomplete"
    run = _Run(target, progress, is_cancelled, echo)
    try:
        run.step(0.0, f"Setting up the MrHash engine {engine_version(source)} in {target}")
        base = find_base_python(options.python)
        device = build_device(options.device)
        run.step(0.02, f"Base Python {base.version} at {base.path}; torch build: {device}")
        _check_space(target, device)
        python = env_python(target)
        if options.fresh or probe_python(str(python)).problem:
            run.step(0.03, "Creating the environment")
            _clear(target)
            run.command([base.path, "-m", "venv", str(target)], (0.03, 0.08), 1,
                        "Creating the environment", timeout_s=600)
        sources = source_arguments(options, device, run.log)
        run.step(0.10, "Installing the engine's requirements (PyTorch, FAISS, rasterio, …)")
        pins = [line for line in (source / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
        run.command([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                     "--no-input", "--progress-bar", "off", "--retries", "2", "--timeout", "30",
                     "-r", str(source / "requirements.txt"), *sources],
                    (0.10, 0.5), 2 * len(pins) + 14, "Installing the requirements",
                    milestones={"Installing collected packages": 0.55,
                                "Successfully installed": 0.85})
        run.step(0.86, "Installing the engine")
        with tempfile.TemporaryDirectory() as folder:
            wheel = engine_wheel(source, Path(folder))
            run.command([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                         "--no-input", "--no-deps", "--no-index", "--force-reinstall",
                         str(wheel)], (0.86, 0.9), 2, "Installing the engine", timeout_s=600)
        run.step(0.90, "Checking that the engine answers (loads PyTorch and the backbone)")
        report = DoctorResult.from_result(ask_engine(python, "doctor", "cpu"))
        run.check_cancelled()
        if not report.ok:
            problems = "; ".join(f"{p.package or p.module}: {p.message}" for p in report.problems)
            raise SetupError("engine_failed", f"the engine does not work: {problems}")
        stamp = {
            "engine": engine_version(source), "plugin": plugin_version(),
            "requirements": requirements_digest(source), "device": device,
            "torch": report.packages.get("torch"), "python": base.path,
            "python_version": report.python, "gdal": report.gdal,
            "proj": report.proj, "cuda_available": report.cuda_available,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "options": {k: str(v) for k, v in asdict(options).items()},
        }
        _write_json(target / STAMP_NAME, stamp)
        run.step(1.0, f"Engine ready: mrhash {stamp['engine']}, torch {stamp['torch']} ({device})")
        return stamp
    except SetupError as error:
        run.log(f"FAILED [{error.code}]: {error.message}")
        raise
    except OSError as error:  # e.g. the disk filling up while we write
        failure = _explain_failure("The set-up", str(error), run.log_path)
        run.log(f"FAILED [{failure.code}]: {error}")
        raise failure from None
    finally:
        run.close()


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
