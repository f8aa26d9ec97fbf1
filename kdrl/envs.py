"""Environments: construction, validation and the autoreset contract.

Training envs are gymnasium vector envs in SAME_STEP autoreset mode: when a sub-env ends, the
step that ended it returns the *reset* observation and puts the true last observation in
``info["final_obs"]``. The collector stores ``final_obs`` as that transition's ``next_obs``, so no
stored transition ever spans an episode boundary, and every step yields a valid transition
(NEXT_STEP mode would waste one step per episode on a reset transition).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from kdrl.errors import KdrlUserError
from kdrl.seeding import Key, seed_ints


class EnvError(KdrlUserError, ValueError):
    """A bad environment request, with a message meant for the user."""


@dataclass(frozen=True)
class EnvSpec:
    """What the rest of kdrl needs to know about an env: shapes, not the env itself."""

    env_id: str
    obs_shape: tuple[int, ...]
    n_actions: int
    obs_dtype: str = "float32"


# ---- env families: MinAtar and the Arcade Learning Environment ----------------------------------
def env_family(env_id: str) -> str:
    """'minatar', 'atari' or 'gym': decides registration and the standard preprocessing."""
    if env_id.startswith("MinAtar/"):
        return "minatar"
    if env_id.startswith("ALE/"):
        return "atari"
    return "gym"


_REGISTERED: set[str] = set()  # the families registered in this process


def _register_family(env_id: str) -> None:
    """MinAtar and ALE register their ids only when asked (minatar 1.0.15 needs an explicit call
    under gymnasium 1.x); do it on first use so ``env.id=MinAtar/Breakout-v1`` just works."""
    family = env_family(env_id)
    if env_id in gym.registry or family == "gym" or family in _REGISTERED:
        return
    _REGISTERED.add(family)  # once: registering again makes gymnasium warn about every id it overrides
    if family == "minatar":
        import minatar.gym

        minatar.gym.register_envs()
    else:
        import ale_py

        gym.register_envs(ale_py)


class MinAtarObservation(gym.ObservationWrapper):
    """MinAtar's (10, 10, C) bool grid as (C, 10, 10) uint8: channels first for conv nets, one byte
    per cell in replay (a float32 copy would be 4x the memory for the same information)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 1, (c, h, w), dtype=np.uint8)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(obs.transpose(2, 0, 1), dtype=np.uint8)


# Mnih et al. (2015) / Machado et al. (2018) preprocessing; v5 envs already use sticky actions 0.25.
ATARI_DEFAULTS: dict[str, Any] = {
    "frame_skip": 4,
    "screen_size": 84,
    "frame_stack": 4,
    "noop_max": 30,
    "terminal_on_life_loss": False,
    "grayscale": True,
}


def atari_env(env_id: str, kwargs: dict[str, Any], preprocess: dict[str, Any]) -> gym.Env:
    """84x84 grey, frame skip 4 (max over the last two frames), no-op starts, frame stack 4 (the
    stack is padded with the reset frame). Reward clipping is done on the way into replay (see
    ``algo.reward_clip``) so episode returns stay raw game scores. ``terminal_on_life_loss`` ends
    episodes at a life loss: a training-time option that also changes what evaluation reports."""
    opts = {**ATARI_DEFAULTS, **(preprocess or {})}
    unknown = set(opts) - set(ATARI_DEFAULTS)
    if unknown:
        raise EnvError(f"unknown Atari preprocess option(s) {sorted(unknown)} (known: {sorted(ATARI_DEFAULTS)})")
    env = gym.make(env_id, **{"frameskip": 1, **kwargs})  # AtariPreprocessing does the frame skip
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=int(opts["noop_max"]),
        frame_skip=int(opts["frame_skip"]),
        screen_size=int(opts["screen_size"]),
        terminal_on_life_loss=bool(opts["terminal_on_life_loss"]),
        grayscale_obs=bool(opts["grayscale"]),
    )
    if int(opts["frame_stack"]) > 1:
        env = gym.wrappers.FrameStackObservation(env, int(opts["frame_stack"]))
    return env


def _check_registered(env_id: str) -> None:
    _register_family(env_id)
    if env_id not in gym.registry:
        import difflib

        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise EnvError(f"unknown gymnasium env id '{env_id}'.{hint}")


def make_env(
    env_id: str, kwargs: dict[str, Any] | None = None, wrappers: Sequence[Callable] = (), render_mode: str | None = None
) -> gym.Env:
    """One gymnasium env with its family's standard preprocessing, then ``wrappers`` in order.

    ``kwargs`` go to ``gym.make``, except ``kwargs["preprocess"]`` (Atari options, see
    ``ATARI_DEFAULTS``): keeping them in kwargs means every place that builds the env from the
    config (training, evaluation, play) preprocesses it the same way.
    """
    _check_registered(env_id)
    kwargs = dict(kwargs or {})
    preprocess = kwargs.pop("preprocess", None)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    family = env_family(env_id)
    if family == "atari":
        env = atari_env(env_id, kwargs, preprocess or {})
    else:
        if preprocess:
            raise EnvError(f"env.kwargs.preprocess is for ALE/ envs only, not '{env_id}'")
        env = gym.make(env_id, **kwargs)
        if family == "minatar":
            env = MinAtarObservation(env)
    for wrap in wrappers:
        env = wrap(env)
    return env


def env_spec(env: gym.Env | gym.vector.VectorEnv) -> EnvSpec:
    """Shapes of a (vector) env; only discrete-action envs are supported (DQN)."""
    obs_space = getattr(env, "single_observation_space", env.observation_space)
    act_space = getattr(env, "single_action_space", env.action_space)
    env_id = env.spec.id if env.spec is not None else "?"
    if not isinstance(act_space, gym.spaces.Discrete):
        raise EnvError(f"env '{env_id}' has a {type(act_space).__name__} action space; kdrl's DQN needs Discrete")
    if not isinstance(obs_space, gym.spaces.Box):
        raise EnvError(f"env '{env_id}' has a {type(obs_space).__name__} observation space; kdrl needs Box")
    return EnvSpec(
        env_id=env_id,
        obs_shape=tuple(obs_space.shape),
        n_actions=int(act_space.n),
        obs_dtype=np.dtype(obs_space.dtype).name,
    )


def probe_spec(env: Mapping[str, Any]) -> EnvSpec:
    """The spec of an env config block (``id``, ``kwargs``), from one env made and closed."""
    probe = make_env(str(env["id"]), dict(env.get("kwargs") or {}))
    try:
        return env_spec(probe)
    finally:
        probe.close()


class SingleEnvVector(gym.vector.VectorEnv):
    """One env behind the SAME_STEP vector-env API: what ``SyncVectorEnv`` returns for one env
    (same observations, float64 rewards, bool flags, ``final_obs``/``final_info`` infos, same
    seeding), without its per-step batching machinery. At ``num_envs=1`` a CartPole step costs
    7 us instead of 21 us, and the single-env loop (CleanRL's setting) steps once per transition."""

    def __init__(self, env_fn: Callable[[], gym.Env]) -> None:
        self.env = env_fn()
        self.num_envs = 1
        self.metadata = dict(self.env.metadata)
        self.metadata["autoreset_mode"] = gym.vector.AutoresetMode.SAME_STEP
        self.render_mode = self.env.render_mode
        self.single_observation_space = self.env.observation_space
        self.single_action_space = self.env.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, 1)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, 1)
        self._obs_dtype = self.single_observation_space.dtype

    def _batched(self, obs: Any) -> np.ndarray:
        return np.array(obs, dtype=self._obs_dtype)[None]  # a fresh copy: envs may reuse buffers

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, (list, tuple, np.ndarray)):
            seed = int(seed[0])
        obs, info = self.env.reset(seed=seed, options=options)
        return self._batched(obs), (self._add_info({}, info, 0) if info else {})

    def step(self, actions: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(actions[0])
        infos: dict[str, Any] = {}
        if terminated or truncated:
            infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, 0)
            obs, info = self.env.reset()
        if info:
            infos = self._add_info(infos, info, 0)
        return (
            self._batched(obs),
            np.array([reward], dtype=np.float64),
            np.array([terminated], dtype=np.bool_),
            np.array([truncated], dtype=np.bool_),
            infos,
        )

    def render(self) -> tuple[Any, ...]:
        return (self.env.render(),)

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()


class EnvPoolVector(gym.vector.VectorEnv):
    """ALE games stepped by EnvPool's C++ thread pool (``env.vectorization=envpool``) behind kdrl's
    SAME_STEP contract, with kdrl's Atari preprocessing as EnvPool options.

    Kept the same as the gymnasium path (kdrl.envs.atari_env): 84x84 grey, frame skip 4 with a max
    over the last two frames, INTER_AREA resize, frame stack 4 padded with the reset frame, up to
    ``noop_max`` no-ops at reset, sticky actions 0.25 (ALE v5), minimal action set, truncation at
    108,000 frames, raw rewards (clipping stays in replay), no FIRE at reset, life loss ends an
    episode only with ``terminal_on_life_loss``. SAME_STEP: an ended sub-env is reset at once (EnvPool
    resets on the next step), its last observation goes to ``info["final_obs"]``. Differences that
    remain (docs/envpool.md): EnvPool bundles its own ALE build, whose reset starts the game a few
    frames apart from ale-py's, so trajectories are not frame-for-frame equal even without sticky
    actions; its no-op count and sticky-action draws come from its own RNG (seeded from the run's
    env seed); evaluation episodes still run on the gymnasium path.
    """

    def __init__(self, env_id: str, num_envs: int, seed: int, kwargs: dict[str, Any] | None = None) -> None:
        import envpool

        if env_family(env_id) != "atari":
            raise EnvError(f"env.vectorization=envpool is for ALE/ envs, not '{env_id}'")
        kwargs = dict(kwargs or {})
        opts = {**ATARI_DEFAULTS, **(kwargs.pop("preprocess", None) or {})}
        sticky = float(kwargs.pop("repeat_action_probability", 0.25))
        full = bool(kwargs.pop("full_action_space", False))
        max_frames = int(kwargs.pop("max_num_frames_per_episode", 108_000))
        if kwargs or not opts["grayscale"]:
            extra = sorted(kwargs) or ["grayscale: false"]
            raise EnvError(f"env.vectorization=envpool does not support {extra}: use vectorization=sync")
        task = env_id.split("/", 1)[1]
        self.pool = envpool.make_gymnasium(
            task,
            num_envs=int(num_envs),
            batch_size=int(num_envs),
            seed=int(seed),
            repeat_action_probability=sticky,
            full_action_space=full,
            frame_skip=int(opts["frame_skip"]),
            img_height=int(opts["screen_size"]),
            img_width=int(opts["screen_size"]),
            stack_num=int(opts["frame_stack"]),
            gray_scale=True,
            noop_max=max(int(opts["noop_max"]), 1),  # EnvPool draws rand() % noop_max: 1 means no no-ops (0 crashes it)
            episodic_life=bool(opts["terminal_on_life_loss"]),
            reward_clip=False,
            use_fire_reset=False,
            use_inter_area_resize=True,
            max_episode_steps=max_frames // int(opts["frame_skip"]),
        )
        self.num_envs = int(num_envs)
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.render_mode = None
        space = self.pool.observation_space
        self.single_observation_space = gym.spaces.Box(0, 255, space.shape, dtype=np.uint8)
        self.single_action_space = gym.spaces.Discrete(int(self.pool.action_space.n))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None):
        obs, _ = self.pool.reset()  # seeded once, when the pool was made
        return np.array(obs), {}

    def step(self, actions: np.ndarray):
        obs, rewards, terminated, truncated, _ = self.pool.step(np.asarray(actions, dtype=np.int32))
        obs = np.array(obs)  # the pool reuses its buffers
        done = terminated | truncated
        infos: dict[str, Any] = {}
        if done.any():
            ended = np.flatnonzero(done)
            final = np.empty(self.num_envs, dtype=object)
            for i in ended:
                final[i] = obs[i].copy()
            fresh, info = self.pool.reset(ended)
            obs[np.asarray(info["env_id"])] = fresh
            infos = {"final_obs": final, "_final_obs": done.copy()}
        return obs, rewards.astype(np.float64), terminated.astype(bool), truncated.astype(bool), infos

    def close_extras(self, **kwargs: Any) -> None:
        self.pool.close()


def make_vector_env(
    env_id: str,
    num_envs: int,
    seed: int,
    kwargs: dict[str, Any] | None = None,
    vectorization: str = "sync",
    wrappers: Sequence[Callable] = (),
    key: tuple[Key, ...] = (),
) -> gym.vector.VectorEnv:
    """A SAME_STEP-autoreset vector env whose sub-envs reset with run ``seed``'s independent env
    seeds (kdrl.seeding; ``key`` names a sub-stream, e.g. a multi-task run's task)."""
    if int(num_envs) < 1:
        raise EnvError(f"env.num_envs must be >= 1, got {num_envs}")
    if vectorization not in ("sync", "async", "envpool"):
        raise EnvError(f"env.vectorization must be 'sync', 'async' or 'envpool', got '{vectorization}'")
    _check_registered(env_id)
    if vectorization == "envpool":
        if wrappers:
            raise EnvError("env.vectorization=envpool takes no extra gymnasium wrappers")
        envs_pool = EnvPoolVector(env_id, int(num_envs), seed_ints(seed, *key, "envs")[0], kwargs)
        envs_pool.spec = gym.spec(env_id)
        envs_pool.reset()
        envs_pool.action_space.seed(seed_ints(seed, *key, "actions")[0])
        return envs_pool
    fns = [lambda: make_env(env_id, kwargs, wrappers) for _ in range(num_envs)]
    if vectorization == "sync" and int(num_envs) == 1:
        envs: gym.vector.VectorEnv = SingleEnvVector(fns[0])
    else:
        cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
        envs = cls(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.spec = gym.spec(env_id)  # vector envs built from callables carry no spec of their own
    envs.reset(seed=seed_ints(seed, *key, "envs", n=num_envs))
    envs.action_space.seed(seed_ints(seed, *key, "actions")[0])
    return envs


def transition_next_obs(next_obs: np.ndarray, infos: dict[str, Any], done: np.ndarray) -> np.ndarray:
    """The true successor observation of each sub-env's last step (``final_obs`` where it ended)."""
    if not done.any():
        return next_obs
    real = next_obs.copy()
    mask = infos.get("_final_obs", done)
    for i in np.flatnonzero(mask):
        real[i] = infos["final_obs"][i]
    return real


# ---- saving the envs mid-episode (a resumed run steps on exactly where the saved one was) ---------
# Families whose whole state pickles and steps on identically after loading (tests/test_resume_exact.py
# checks each). Box2D (LunarLander) and ALE pickle too, but lose their state (a Box2D body, the
# emulator's RNG), and an async or EnvPool vector env's envs live in other processes: those are reset.
_RESTORABLE_ENV_MODULES = ("minatar.", "gymnasium.envs.classic_control.")
# what a saved env state may name when loaded: a checkpoint is data, so loading it runs no other code
_ENV_STATE_MODULES = (*_RESTORABLE_ENV_MODULES, "gymnasium.wrappers.", "gymnasium.spaces.")
_ENV_STATE_NAMES = {
    ("gymnasium.envs.registration", "EnvSpec"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("kdrl.envs", "MinAtarObservation"),
    ("kdrl.envs", "SetPhysics"),
    ("kdrl.envs", "GaussianObsNoise"),
}


def _sub_envs(envs: gym.vector.VectorEnv) -> list[gym.Env] | None:
    """The sub-envs of a vector env stepped in this process, or None (async, EnvPool)."""
    if isinstance(envs, SingleEnvVector):
        return [envs.env]
    if isinstance(envs, gym.vector.SyncVectorEnv):
        return list(envs.envs)
    return None


def envs_restorable(envs: gym.vector.VectorEnv) -> bool:
    """Whether ``vector_env_state`` can save these envs mid-episode."""
    subs = _sub_envs(envs)
    return subs is not None and all(type(e.unwrapped).__module__.startswith(_RESTORABLE_ENV_MODULES) for e in subs)


def vector_env_state(envs: gym.vector.VectorEnv) -> bytes | None:
    """The sub-envs' whole state (episodes in progress, their RNGs); None for envs
    ``envs_restorable`` rules out."""
    if not envs_restorable(envs):
        return None
    return pickle.dumps(_sub_envs(envs), protocol=5)


class _EnvStateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_ENV_STATE_MODULES) or (module, name) in _ENV_STATE_NAMES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a saved env state may not name {module}.{name}")


def load_vector_env_state(envs: gym.vector.VectorEnv, state: bytes) -> None:
    """Put sub-envs saved by ``vector_env_state`` in place of ``envs``' own."""
    subs = _EnvStateUnpickler(io.BytesIO(state)).load()
    if not isinstance(subs, list):
        raise ValueError(f"a saved env state is a list of envs, got a {type(subs).__name__}")
    if len(subs) != envs.num_envs:
        raise ValueError(f"the saved env state holds {len(subs)} envs, the run has {envs.num_envs}")
    if isinstance(envs, SingleEnvVector):
        envs.env = subs[0]
    elif isinstance(envs, gym.vector.SyncVectorEnv):
        envs.envs = subs
    else:
        raise TypeError(f"{type(envs).__name__} steps its envs elsewhere: they cannot be restored")


# ---- perturbed envs for generalisation tests ------------------------------------------------------
class SetPhysics(gym.Wrapper):
    """Overrides attributes of the unwrapped env (e.g. CartPole's ``length``, ``masspole``).

    CartPole precomputes ``total_mass`` and ``polemass_length`` in ``__init__``; they are
    recomputed here so a changed mass or length takes effect.
    """

    def __init__(self, env: gym.Env, attrs: dict[str, float]) -> None:
        super().__init__(env)
        base = env.unwrapped
        for name, value in attrs.items():
            if not hasattr(base, name):
                raise EnvError(f"perturbation sets unknown attribute '{name}' on {type(base).__name__}")
            setattr(base, name, value)
        if hasattr(base, "polemass_length"):
            base.total_mass = base.masspole + base.masscart
            base.polemass_length = base.masspole * base.length


class GaussianObsNoise(gym.ObservationWrapper):
    """Adds N(0, sigma^2) noise to every observation (seeded by the env's reset seed)."""

    def __init__(self, env: gym.Env, sigma: float) -> None:
        super().__init__(env)
        self.sigma = float(sigma)
        self.rng = np.random.default_rng(0)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed + 7919)
        return super().reset(seed=seed, options=options)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        return (obs + self.rng.normal(0.0, self.sigma, size=obs.shape)).astype(obs.dtype)


def perturbation_wrappers(spec: dict[str, Any]) -> list[Callable[[gym.Env], gym.Env]]:
    """Wrappers for one entry of ``env.perturbations``: {name, physics: {...}, obs_noise: sigma}.

    (An entry's ``kwargs`` — constructor arguments such as LunarLander's ``gravity`` — are merged
    into the env kwargs by the caller.)
    """
    wrappers: list[Callable[[gym.Env], gym.Env]] = []
    if spec.get("physics"):
        attrs = dict(spec["physics"])
        wrappers.append(lambda env: SetPhysics(env, attrs))
    if spec.get("obs_noise"):
        sigma = float(spec["obs_noise"])
        wrappers.append(lambda env: GaussianObsNoise(env, sigma))
    return wrappers
