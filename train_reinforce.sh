#!/usr/bin/env bash
# ZeroSearch with REINFORCE (A = R, the paper's final default); `ALGORITHM reinforce_plus_plus` selects
# Reinforce++ (token-level returns with a per-token KL penalty, whitened over the batch).
# Arguments: scripts/train_common.sh (NAME VALUE pairs, then `--` Hydra overrides).
# With no arguments: the CPU toy-world demo with REINFORCE (docs/demo.md).
ALGORITHM=reinforce
source "$(dirname "${BASH_SOURCE[0]}")/scripts/train_common.sh"
