#!/usr/bin/env python
"""A plain single-file DQN on MinAtar, outside kdrl: Young & Tian (2019)'s settings (1 env, batch-1
acting, numpy replay of 100k, batch 32, one update per env step, Huber TD loss, target copied
every 1,000 steps, eps 1.0 -> 0.1 over 100k steps after 5k, centred RMSProp lr 2.5e-4 /
alpha 0.95 / eps 0.01, their 16-filter 3x3 conv + 128 net). The reference kdrl's MinAtar speed is
measured against (scripts/bench_speed.py); it imports nothing from kdrl. Prints one JSON line:
train wall time, steps/s and the greedy return on 20 held-out episodes (seeds 2,000,000 + i).

    python scripts/plain/minatar_dqn.py --env MinAtar/Breakout-v1 --seed 0 --total-timesteps 100000
"""

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def make_env(env_id: str) -> gym.Env:
    import minatar.gym

    if env_id not in gym.registry:
        minatar.gym.register_envs()
    return gym.make(env_id, max_episode_steps=10_000)


def channels_first(obs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(obs.transpose(2, 0, 1), dtype=np.uint8)


class QNetwork(nn.Module):
    def __init__(self, in_channels: int, n_actions: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, 1)
        self.fc = nn.Linear(16 * 8 * 8, 128)
        self.out = nn.Linear(128, n_actions)

    def forward(self, x):
        x = F.relu(self.conv(x.float()))
        return self.out(F.relu(self.fc(x.flatten(1))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="MinAtar/Breakout-v1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--total-timesteps", type=int, default=100_000)
    args = ap.parse_args()
    t_process = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    env = make_env(args.env)
    n_actions = env.action_space.n
    obs = channels_first(env.reset(seed=args.seed)[0])
    q_net, target = QNetwork(obs.shape[0], n_actions), QNetwork(obs.shape[0], n_actions)
    target.load_state_dict(q_net.state_dict())
    opt = torch.optim.RMSprop(q_net.parameters(), lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)
    cap, batch, gamma = 100_000, 32, 0.99
    obs_b = np.zeros((cap, *obs.shape), np.uint8)
    next_b = np.zeros_like(obs_b)
    act_b = np.zeros(cap, np.int64)
    rew_b = np.zeros(cap, np.float32)
    term_b = np.zeros(cap, np.float32)
    t0 = time.perf_counter()
    for step in range(args.total_timesteps):
        eps = 1.0 if step < 5000 else max(0.1, 1.0 - 0.9 * (step - 5000) / 100_000)
        if rng.random() < eps:
            action = int(rng.integers(n_actions))
        else:
            with torch.no_grad():
                action = int(q_net(torch.from_numpy(obs[None])).argmax(1))
        next_raw, reward, terminated, truncated, _ = env.step(action)
        next_obs = channels_first(next_raw)
        i = step % cap
        obs_b[i], next_b[i], act_b[i], rew_b[i], term_b[i] = obs, next_obs, action, reward, terminated
        obs = channels_first(env.reset()[0]) if (terminated or truncated) else next_obs
        if step >= 5000:
            idx = rng.integers(0, min(step + 1, cap), batch)
            o, no = torch.from_numpy(obs_b[idx]), torch.from_numpy(next_b[idx])
            a, r, d = torch.from_numpy(act_b[idx]), torch.from_numpy(rew_b[idx]), torch.from_numpy(term_b[idx])
            with torch.no_grad():
                y = r + gamma * (1 - d) * target(no).max(1).values
            loss = F.smooth_l1_loss(q_net(o).gather(1, a[:, None]).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (step + 1) % 1000 == 0:
            target.load_state_dict(q_net.state_dict())
    train_s = time.perf_counter() - t0
    returns = []
    with torch.no_grad():
        for k in range(20):
            eval_env = make_env(args.env)
            o = channels_first(eval_env.reset(seed=2_000_000 + k)[0])
            done, ret = False, 0.0
            while not done:
                raw, r, term, trunc, _ = eval_env.step(int(q_net(torch.from_numpy(o[None])).argmax(1)))
                o, ret, done = channels_first(raw), ret + float(r), term or trunc
            returns.append(ret)
    print(
        json.dumps(
            {
                "seed": args.seed,
                "env_steps": args.total_timesteps,
                "train_s": train_s,
                "sps": args.total_timesteps / train_s,
                "return_mean": float(np.mean(returns)),
                "return_std": float(np.std(returns)),
                "in_process_s": time.perf_counter() - t_process,
            }
        )
    )


if __name__ == "__main__":
    main()
