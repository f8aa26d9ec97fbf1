#!/usr/bin/env python
"""A plain single-file DQN, outside kdrl: CleanRL dqn.py's algorithm and hyperparameters on
CartPole-v1 (1 env, 120-84 MLP, Adam 2.5e-4, batch 128, replay 10k, train every 10 env steps,
target copied every 500, learning starts 10k, eps 1 -> 0.05 over half the run, MSE TD loss).
The reference kdrl's speed is measured against (scripts/bench_speed.py); it imports nothing
from kdrl. Prints one JSON line: train wall time, steps/s and the greedy return on 20 held-out
episodes (seeds 2,000,000 + i, as kdrl's final evaluation).

    python scripts/plain/cleanrl_dqn_cartpole.py --seed 0 --total-timesteps 100000
"""

import argparse
import json
import random
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class QNetwork(nn.Module):
    def __init__(self, n_obs: int, n_actions: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nn.Linear(n_obs, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, n_actions)
        )

    def forward(self, x):
        return self.network(x)


def linear_schedule(start_e: float, end_e: float, duration: int, t: int) -> float:
    return max(start_e + (end_e - start_e) * t / duration, end_e)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--total-timesteps", type=int, default=100_000)
    ap.add_argument("--save-model", default=None, help="write the Q-network as CleanRL does (.cleanrl_model)")
    args = ap.parse_args()
    t_process = time.perf_counter()
    lr, buffer_size, gamma, target_freq, batch_size = 2.5e-4, 10_000, 0.99, 500, 128
    start_e, end_e, exploration_fraction, learning_starts, train_frequency = 1.0, 0.05, 0.5, 10_000, 10
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    env = gym.make("CartPole-v1")
    env.action_space.seed(args.seed)
    q_network, target_network = QNetwork(4, 2), QNetwork(4, 2)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=lr)
    obs_b = np.zeros((buffer_size, 4), np.float32)
    next_b = np.zeros((buffer_size, 4), np.float32)
    act_b = np.zeros(buffer_size, np.int64)
    rew_b = np.zeros(buffer_size, np.float32)
    done_b = np.zeros(buffer_size, np.float32)
    pos = size = 0
    obs, _ = env.reset(seed=args.seed)
    t0 = time.perf_counter()
    for global_step in range(args.total_timesteps):
        epsilon = linear_schedule(start_e, end_e, int(exploration_fraction * args.total_timesteps), global_step)
        if random.random() < epsilon:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = int(q_network(torch.as_tensor(obs[None])).argmax(dim=1).item())
        next_obs, reward, terminated, truncated, _ = env.step(action)
        obs_b[pos], next_b[pos], act_b[pos], rew_b[pos], done_b[pos] = obs, next_obs, action, reward, terminated
        pos, size = (pos + 1) % buffer_size, min(size + 1, buffer_size)
        obs = env.reset()[0] if (terminated or truncated) else next_obs
        if global_step > learning_starts and global_step % train_frequency == 0:
            idx = np.random.randint(0, size, batch_size)
            o, a, r, n, d = (torch.as_tensor(x[idx]) for x in (obs_b, act_b, rew_b, next_b, done_b))
            with torch.no_grad():
                td_target = r + gamma * target_network(n).max(dim=1).values * (1 - d)
            old_val = q_network(o).gather(1, a[:, None]).squeeze(1)
            loss = F.mse_loss(td_target, old_val)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if global_step % target_freq == 0:
            target_network.load_state_dict(q_network.state_dict())
    train_s = time.perf_counter() - t0
    returns = []
    with torch.no_grad():
        for i in range(20):
            eval_env = gym.make("CartPole-v1")
            o, _ = eval_env.reset(seed=2_000_000 + i)
            done, ret = False, 0.0
            while not done:
                o, r, term, trunc, _ = eval_env.step(int(q_network(torch.as_tensor(o[None])).argmax(1).item()))
                ret, done = ret + float(r), term or trunc
            returns.append(ret)
    out = {
        "seed": args.seed,
        "env_steps": args.total_timesteps,
        "train_s": train_s,
        "sps": args.total_timesteps / train_s,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "in_process_s": time.perf_counter() - t_process,
    }
    if args.save_model:
        torch.save(q_network.state_dict(), args.save_model)  # CleanRL: torch.save(q_network.state_dict(), model_path)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
