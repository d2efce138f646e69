"""Simulation tuning for real LLMs: from a policy's searches on a real engine to a simulator, and its audit.

    python -m zerosearch.simtune collect   a policy answers training questions with a real engine (the agent loop
                                           of training); every trajectory and its searches are recorded
    python -m zerosearch.simtune label     each (query, documents) labelled useful / noisy: answer containment,
                                           the trajectory's outcome, an LLM judge; agreement printed
    python -m zerosearch.simtune build     balanced useful/noisy SFT rows in the prompt the trainer sends, split
                                           by question, deduplicated
    python -m zerosearch.simtune convert   another layout's rows (prompt/response columns) as SFT rows
    python -m zerosearch.simtune audit     a served simulator measured: answer rate per mode, query sensitivity,
                                           format, diversity, latency

The SFT itself is `verl.trainer.sft_trainer` (configs/simtune/). docs/simtune.md walks through it.
"""
