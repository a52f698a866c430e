"""Everything that trains in order to measure the suite (analysis/ only reads records, never trains).

The benchmark of the training step (`python -m bench.benchmark`):
    benchmark.py           the command: methodology (its docstring), the machine, one function per section
    clock.py               the device clock (CUDA sync), summaries of timings, returning freed memory
    cases.py               what is measured: model shapes, cases, the budget, the suite's job for a case
    loops.py               timing loops: the suite's Trainer (FineTune.setup_trainer) and its plain twins
    flops.py               matmul FLOPs of a step, and the hardware's matmul peak
    startup.py             `lab-train` start-up, timed from child processes
    render.py              the Markdown report and the scaling plot, from the JSON

Checks of the suite against a device and against the estimator:
    device_check.py        full / LoRA / QLoRA runs on ~0.5B and ~1.5B random-init Llamas (scripts/gpu_check.sh)
    ledger_vs_estimate.py  short runs' measured memory ledgers beside the analytic estimate

What trains, for how long (the CPU figures on 2 cores):
    python -m bench.benchmark             about 10 min on the CPU (--quick about 2 min; --smoke a few minutes,
                                          12 min measured on 2 cores shared with a test run); --render JSON
                                          trains nothing
    python -m bench.device_check          under 8 min on one H200 (starts no run after --budget-seconds, 450);
                                          --cpu-smoke: 7 runs of 3 steps on tiny Llamas, about a minute
    python -m bench.ledger_vs_estimate    12 runs of 2 steps (tiny-bert, tiny-llama x full, LoRA, QLoRA x
                                          gradient checkpointing off, on), a minute or two; --records trains nothing
"""
