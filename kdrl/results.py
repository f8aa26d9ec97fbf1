"""The per-run results file (results.json): its schema, and the writer every job uses.

One dataclass per kind of run (``TeacherResult``, ``StudentResult``, ``MultiTaskResult``, with a
``TaskResult`` per multi-task task) names every key a results.json may hold. The job runners fill
one in as the run goes and write it in a ``finally``; kdrl-table and the multi-task table read the
files back through the same classes and take their columns from the fields marked ``column``.

A key is written once its field is assigned, None included (null is a recorded value, e.g.
``teacher_wall_time_s`` of a teacher given as a checkpoint); a field never assigned is left out of
the file, as the dict writers left out the keys a failed run never reached, and reads as None.
Keys the schema does not know are kept in ``extra`` and written back unchanged, so a file from an
older or newer kdrl round-trips.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from kdrl.io import atomic_write_json

RESULTS_FILE = "results.json"
_PACKAGES = ("kdrl", "torch", "pytorch-lightning", "hydra-core", "omegaconf", "gymnasium", "numpy", "wandb")


class _Unset:
    """The default of a field whose key is only written once the run gets that far."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
_REQUIRED: Any = dataclasses.MISSING


def entry(default: Any = UNSET, *, column: int | None = None, key: str | None = None) -> Any:
    """A schema field. ``column``: its position among kdrl-table's row columns (kdrl.tables.FLAT_FIELDS);
    ``key``: its JSON key when that is not a Python name (``lambda``). ``default=UNSET`` (the
    default): left out of the file until assigned; any other default is written from the start."""
    meta = {k: v for k, v in (("column", column), ("key", key)) if v is not None}
    if default is _REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def required(*, column: int | None = None, key: str | None = None) -> Any:
    """A field the job runner must give at construction (written from the start)."""
    return entry(_REQUIRED, column=column, key=key)


R = TypeVar("R", bound="Record")


@dataclass(kw_only=True)
class Record:
    """Key-tracking plumbing shared by the run results and the per-task results."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys this schema does not know

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _json_keys(type(self)).values() and name != "extra":
            # a misspelt field would otherwise vanish from the file without a word
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        # assigning UNSET (the dataclass default, or a key missing from a file) stores None and leaves
        # the key out of to_dict; assigning anything else, None included, writes the key
        unwritten = self.__dict__.setdefault("_unwritten", set())
        if value is UNSET:
            unwritten.add(name)
            value = None
        else:
            unwritten.discard(name)
        object.__setattr__(self, name, value)

    @classmethod
    def json_keys(cls) -> dict[str, str]:
        """JSON key -> field name, in declaration order."""
        return dict(_json_keys(cls))

    def written(self, key: str) -> bool:
        """Whether ``key`` goes into the file (its field was assigned, or it came from the file)."""
        name = _json_keys(type(self)).get(key)
        return key in self.extra if name is None else name not in self.__dict__.get("_unwritten", ())

    def to_dict(self) -> dict[str, Any]:
        """The JSON body: every written key with its value as assigned (nested records as dicts), then
        the unknown keys. Values are not converted, so json.dump writes what the dict writers wrote."""
        unwritten = self.__dict__.get("_unwritten", set())
        body = {
            key: _plain(getattr(self, name)) for key, name in _json_keys(type(self)).items() if name not in unwritten
        }
        body.update({k: v for k, v in self.extra.items() if k not in body})
        return body

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Read a body written by any kdrl version: missing keys stay unwritten (None), unknown keys
        go to ``extra``."""
        return _build(cls, data)

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        """A JSON value -> the field's value (overridden where a field holds nested records)."""
        return value


@functools.cache
def _json_keys(cls: type[Record]) -> dict[str, str]:
    return {f.metadata.get("key", f.name): f.name for f in dataclasses.fields(cls) if f.name != "extra"}


def _build(cls: type[R], data: Mapping[str, Any]) -> R:
    keys = _json_keys(cls)
    kwargs = {name: cls._read(name, data[key]) if key in data else UNSET for key, name in keys.items()}
    return cls(**kwargs, extra={k: v for k, v in data.items() if k not in keys})


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, dict) and any(isinstance(v, Record) for v in value.values()):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(kw_only=True)
class RunResult(Record):
    """What every run writes. The identifying fields are written from the start (status "failed"
    until the run sets "ok"); the rest as the run reaches them. Timings are in seconds."""

    kinds: ClassVar[dict[str, type[RunResult]]] = {}

    kind: str | None = entry(column=0)
    status: str = entry("failed", column=1)
    env_id: str | None = required(column=2)  # multi-task: the tasks' env ids joined by "+", None until loaded
    seed: int = required(column=3)
    run_dir: str = required(column=28)
    resumed_from_env_steps: int | None = entry(None)  # env steps of the checkpoint a resumed run started from
    config: dict[str, Any] = required()  # the resolved Hydra config
    # failure (written by the runner's except)
    error: str | None = entry(column=27)  # "ExcType: message"
    traceback: str | None = entry()
    # timings
    setup_s: float | None = entry()  # job start -> fit: config, envs, teachers, trainer, loggers
    job_wall_time_s: float | None = entry(column=29)  # the whole job, failed or not
    wall_time_s: float | None = entry(column=16)  # fit, including the time before a kill when resumed
    train_wall_time_s: float | None = entry(column=17)  # fit minus periodic evaluation
    sps: float | None = entry(column=18)  # env_steps / wall_time_s
    # outcome
    params: int | None = entry(column=11)  # the trained network's parameters
    env_steps: int | None = entry(column=14)  # multi-task: summed over tasks
    grad_steps: int | None = entry(column=15)
    eval_return_mean: float | None = entry(column=19)  # single-task kinds: held-out greedy return
    eval_return_std: float | None = entry(column=20)
    eval_returns: list[float] | None = entry()
    eval_history: list[dict[str, Any]] | None = entry()  # the periodic evaluations' records
    checkpoint: str | None = entry()  # the chosen policy file (teacher.pt / student.pt)
    # provenance (write_results fills whichever the run did not set)
    git_sha: str | None = entry()
    versions: dict[str, str] | None = entry()
    host: str | None = entry()
    # the CPU's model and the kernels torch dispatched to (AVX2, AVX512, ...): float sums in another order
    # flip a near-tied argmax, so a seed reruns digit for digit only on the same kind (docs/results.md)
    cpu: dict[str, str] | None = entry()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = getattr(cls, "KIND", None)
        if kind:
            RunResult.kinds[kind] = cls

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """On RunResult: the class of ``data["kind"]`` (RunResult itself for a kind it does not know);
        on a subclass: that class, which must match the file's kind."""
        kind = data.get("kind")
        if cls is RunResult:
            cls = RunResult.kinds.get(kind, RunResult)  # type: ignore[assignment]
        elif kind is not None and kind != getattr(cls, "KIND", None):
            raise ValueError(f"{cls.__name__}.from_dict: a {kind!r} result, not {getattr(cls, 'KIND', None)!r}")
        return _build(cls, data)


@dataclass(kw_only=True)
class TeacherResult(RunResult):
    """kdrl-train: a DQN teacher."""

    KIND: ClassVar[str] = "teacher"
    kind: str | None = entry(KIND, column=0)
    episodes: int | None = entry()  # training episodes finished
    eval_policy: str | None = entry()  # which checkpoint was evaluated: "best" or "last"
    best_periodic_eval: float | None = entry()  # best periodic-evaluation return (chooses "best")
    reference: dict[str, Any] | None = entry()
    """The teacher reference (kdrl.reference) as stored next to teacher.pt: the teacher and a random
    policy on ``episodes`` final held-out seeds, ``teacher`` / ``random``: mean, std, se, returns."""


@dataclass(kw_only=True)
class TeacherReference(Record):
    """The teacher reference a student's normalised score divides by (kdrl.reference): its teacher
    and a uniform-random policy on the final held-out seeds ``first_seed + i``, i < ``episodes``
    (the student's own final episodes are the first of them), measured once per teacher."""

    episodes: int = required()
    first_seed: int = required()
    epsilon: float = required()  # the teacher's evaluation epsilon
    return_mean: float = required()  # T of the normalised score
    return_std: float = required()  # ddof=1
    return_se: float = required()  # return_std / sqrt(episodes)
    random_mean: float = required()  # R of the normalised score
    random_std: float = required()
    random_se: float = required()
    stored_at: str | None = required()  # the reference file it was read from or written to (None: not stored)


@dataclass(kw_only=True)
class StudentResult(RunResult):
    """kdrl-distill: one student distilled from one teacher (or trained from scratch, baseline)."""

    KIND: ClassVar[str] = "student"
    kind: str | None = entry(KIND, column=0)
    loss: str | None = required(column=4)  # "scratch" for the baseline
    temperature: float | None = required(column=5)
    width: int | None = required(column=6)  # as built (a named student_size resolves to it)
    student_size: str | None = required(column=7)
    depth: int | None = required(column=8)
    control: str | None = required(column=9)  # who acts while collecting: teacher / student / mixed
    baseline: str | None = required(column=10)
    lambda_: Any = required(key="lambda")  # the hybrid loss's lambda schedule (None unless hybrid)
    feature_weight: float | None = required()
    teacher_params: int | None = entry(column=12)
    param_ratio: float | None = entry(column=13)  # params / teacher_params
    # the teacher and a random policy on the same held-out seeds as eval_returns (before the teacher
    # reference existed, the score's T and R: kept to compare with older tables)
    teacher_return_mean: float | None = entry(column=21)
    teacher_returns: list[float] | None = entry()
    raw_return_ratio: float | None = entry(column=22)  # S / T_ref: inverts for negative returns
    normalized_score: float | None = entry(column=23)
    """(S - R) / (T - R) with S the student's held-out mean and T, R its teacher reference's means
    (kdrl.scores.normalized_score): the headline metric; nan (refused) when the teacher does not
    clearly beat random on the reference episodes (teacher_beats_random)."""
    random_return_mean: float | None = entry(column=24)  # a uniform-random policy on the same seeds
    random_returns: list[float] | None = entry()
    teacher_reference: TeacherReference | None = entry()  # T and R of normalized_score (kdrl.reference)
    teacher_beats_random: bool | None = entry()  # kdrl.scores.teacher_beats_random on the reference episodes
    random_periodic_return: float | None = entry()  # the random policy on the periodic seeds
    teacher_periodic_return: float | None = entry()  # the teacher on the periodic-evaluation seeds
    speed: dict[str, dict[str, float] | None] | None = entry()  # to_90pct / to_100pct: env_steps, train_wall_s
    generalisation: dict[str, dict[str, float]] | None = entry()  # perturbation -> {student, teacher}
    resources: dict[str, dict[str, Any]] | None = entry()  # teacher / student -> params, bytes, flops, latency
    action_agreement: float | None = entry(column=25)  # student argmax == teacher argmax on held-out states
    agreement_states: int | None = entry()
    teacher_checkpoint: str | None = entry()
    teacher_seed: int | None = entry()  # the on-demand teacher's seed (None: given as a file)
    teacher_wall_time_s: float | None = entry(column=26)  # the teacher's training time; None if given as a file
    dataset: dict[str, Any] | None = entry()  # distill.dataset (kdrl.datasets): path, sha256, env_steps, epsilon, seed
    pretrain: dict[str, float] | None = entry()  # QDagger's offline phase: teacher_steps, updates, wall_s (None: none)
    prune: dict[str, float] | None = entry()  # distill.prune: amount, at_env_step, nonzero params (None: not pruned)
    quantize: dict[str, Any] | None = entry()  # distill.quantize: at_env_step, int8_representable (None: float)
    teacher_format: str | None = entry()  # kdrl | sb3 | cleanrl | torchscript (kdrl.foreign)
    teacher_reported_return: float | None = entry()  # the return a foreign teacher's files report, if any
    teacher_warning: str | None = entry()  # the wrapper-mismatch check's line (kdrl.teachers.mismatch_warning)

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        return _read_reference(name, value)


@dataclass(kw_only=True)
class DatasetResult(RunResult):
    """kdrl-data: a teacher dataset (kdrl.datasets), the teacher's epsilon-greedy play with its Q-values."""

    KIND: ClassVar[str] = "dataset"
    kind: str | None = entry(KIND, column=0)
    teacher_checkpoint: str | None = entry()
    epsilon: float | None = entry()  # the teacher's exploration while recording
    num_envs: int | None = entry()
    episodes: int | None = entry()  # episodes that ended within the recording
    episode_return_mean: float | None = entry()  # their mean return (the teacher's epsilon-greedy play)
    dataset: dict[str, Any] | None = entry()  # path, sha256, bytes


@dataclass(kw_only=True)
class TaskResult(Record):
    """One task of a multi-task run, all on the same held-out seeds (written all at once)."""

    env_id: str = required()
    obs_shape: list[int] = required()
    n_actions: int = required()
    eval_return_mean: float = required()
    eval_return_std: float = required()
    eval_returns: list[float] = required()
    teacher_return_mean: float = required()  # on the same held-out seeds (not the score's T: teacher_reference)
    teacher_returns: list[float] = required()
    random_return_mean: float = required()
    random_returns: list[float] = required()
    teacher_reference: TeacherReference | None = entry()  # T and R of pct_of_teacher (kdrl.reference)
    teacher_beats_random: bool = required()  # on the teacher reference's episodes
    pct_of_teacher: float = required()  # 100 * normalized_score against teacher_reference: 0 = random, 100 = teacher
    raw_return_ratio: float = required()  # Rusu et al.'s raw ratio S / T_ref; nan unless T_ref > 0
    env_steps: int = required()
    episodes: int = required()
    params: int = required()  # the parameters this task's forward uses
    teacher_params: int = required()
    teacher_checkpoint: str = required()
    teacher_wall_time_s: float | None = required()

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        return _read_reference(name, value)


def _read_reference(name: str, value: Any) -> Any:
    if name == "teacher_reference" and isinstance(value, Mapping):
        return TeacherReference.from_dict(value)
    return value


@dataclass(kw_only=True)
class MultiTaskResult(RunResult):
    """kdrl-multitask: one multi-task student (distilled, or joint DQN at the same budget)."""

    KIND: ClassVar[str] = "multitask"
    kind: str | None = entry(KIND, column=0)
    mode: str = required()  # distill / joint_dqn
    task_names: list[str] = required()
    loss: str | None = required(column=4)  # "joint_dqn" for joint training
    temperature: float | None = required(column=5)
    method: str = required()  # the row label (kdrl.tables.method_name)
    width: int | None = required(column=6)
    depth: int | None = required(column=8)
    adapter: str = required()
    update: str = required()
    tasks: dict[str, TaskResult] | None = entry()
    mean_pct_of_teacher: float | None = entry()
    geomean_pct_of_teacher: float | None = entry()  # floored at 1% per task (kdrl.scores.mean_pcts)
    normalized_score: float | None = entry(column=23)  # mean_pct_of_teacher / 100 (kdrl-table's scale)
    teacher_params: int | None = entry(column=12)  # summed over the tasks' teachers
    param_ratio: float | None = entry(column=13)
    task_env_steps: int | None = entry()  # per task (env_steps is the sum)
    optimizer_steps: int | None = entry()

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        if name == "tasks" and isinstance(value, dict):
            return {k: TaskResult.from_dict(v) for k, v in value.items()}
        return value


def load_result(data: Mapping[str, Any]) -> RunResult:
    """A results.json body as its kind's class (RunResult for a kind this kdrl does not know)."""
    return RunResult.from_dict(data)


def table_columns() -> tuple[str, ...]:
    """The keys marked ``column`` over every kind, in column order: kdrl-table's row columns.

    A key declared in several kinds must name the same position; positions must run 0..n-1."""
    pos: dict[str, int] = {}
    for cls in RunResult.kinds.values():
        for f in dataclasses.fields(cls):
            if "column" in f.metadata:
                key = f.metadata.get("key", f.name)
                if pos.setdefault(key, f.metadata["column"]) != f.metadata["column"]:
                    raise TypeError(f"results schema: column {key!r} has two positions")
    order = sorted(pos, key=pos.__getitem__)
    if [pos[k] for k in order] != list(range(len(order))):
        raise TypeError(f"results schema: column positions are not 0..{len(order) - 1}: {pos}")
    return tuple(order)


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    out["python"] = platform.python_version()
    return out


def cpu_info() -> dict[str, str]:
    """{"model": the CPU's model name, "torch_capability": the vector kernels torch uses (when torch is loaded)}."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    out = {"model": model}
    torch = sys.modules.get("torch")  # a job has it loaded; a table tool writing no run does not import it
    if torch is not None:
        out["torch_capability"] = str(torch.backends.cpu.get_cpu_capability())
    return out


def git_sha() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_results(run_dir: str | Path, result: RunResult) -> Path:
    """Write ``result`` as run_dir/results.json, atomically, adding the provenance keys it does not
    already hold."""
    body = result.to_dict()
    body.setdefault("git_sha", git_sha())
    body.setdefault("versions", package_versions())
    body.setdefault("host", platform.node())
    body.setdefault("cpu", cpu_info())
    return atomic_write_json(Path(run_dir) / RESULTS_FILE, body)
