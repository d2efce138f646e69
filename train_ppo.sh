#!/usr/bin/env bash
# ZeroSearch with PPO (a learned critic, GAE over policy tokens, KL in the reward).
# Arguments: scripts/train_common.sh (NAME VALUE pairs, then `--` Hydra overrides).
# With no arguments: the CPU toy-world demo with PPO (docs/demo.md).
ALGORITHM=ppo
source "$(dirname "${BASH_SOURCE[0]}")/scripts/train_common.sh"
