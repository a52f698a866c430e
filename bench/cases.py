"""What the benchmark measures: model shapes, cases, the measuring budget, and the job a case runs.

A case is a random-init architecture x method x batch x sequence length. `prepare` turns it into the
suite's own job (`lab.recipe.FineTune`) with its data set up; the caller builds the model with
`job.setup_model()` and Trainers with `job.setup_trainer()`, exactly as a `lab-train` run does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, open_dict

from lab import record
from lab.config import compose, validate
from lab.recipe import FineTune, resolve_device

METHODS = ("full", "lora", "qlora")

SMOLLM2_135M = dict(model_type="llama", vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                    max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.02,
                    rms_norm_eps=1e-5)
MINILM_L6 = dict(model_type="bert", vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                 num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512)


def llama(hidden, layers, heads, kv_heads, intermediate, vocab):
    return dict(model_type="llama", vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
                max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.02)


# About 1M, 4M, 15M, 46M parameters; the SmolLM2-135M shape closes the family.
FAMILY = {
    "llama-1m": llama(128, 4, 4, 2, 384, 2048),
    "llama-4m": llama(256, 4, 4, 2, 768, 4096),
    "llama-15m": llama(384, 8, 6, 2, 1024, 8192),
    "llama-46m": llama(512, 12, 8, 4, 1536, 16384),
    "smollm2-135m-shape": SMOLLM2_135M,
}


@dataclass
class Case:
    name: str
    architecture: dict
    method: str
    batch: int
    seq: int
    rank: int | None = 8  # None: the method has no capacity knob (IA³, LayerNorm tuning)
    # Further `lab-train` overrides of the case (a method's targets, say).
    extra: tuple = ()

    @property
    def task(self) -> str:
        return "cls" if self.architecture["model_type"] == "bert" else "lm"


@dataclass
class Budget:
    """How much to measure; `--quick` shrinks every part of it. (Not `lab.memory.estimate.Plan`, the
    estimator's meta-device model; the report keeps this under its key `plan`.)"""
    warmup: int = 1
    steps: int = 3
    repeats: int = 3
    shapes: dict = field(default_factory=dict)
    small_steps: int = 20
    family: list = field(default_factory=list)
    family_repeats: int = 2
    seq_model: str = "llama-15m"
    seq_lengths: list = field(default_factory=list)
    peak_sizes: list = field(default_factory=list)
    startup_jobs: int = 3


def smoke_budget() -> Budget:
    """Exercises every code path in a minute or two; the numbers mean nothing."""
    tiny_llama = FAMILY["llama-1m"]
    tiny_bert = dict(MINILM_L6, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     vocab_size=1024)
    return Budget(warmup=1, steps=2, repeats=1, small_steps=3, family_repeats=1,
                  shapes={"llama-1m-as-smollm": (tiny_llama, 2, 16), "tiny-bert-as-minilm": (tiny_bert, 2, 16)},
                  family=["llama-1m", "llama-4m"], seq_model="llama-1m", seq_lengths=[16, 32], peak_sizes=[256],
                  startup_jobs=2)


def make_budget(mode: str) -> Budget:
    """The budget of `--smoke`, `--quick` or the full run."""
    if mode == "smoke":
        return smoke_budget()
    if mode == "quick":
        return Budget(warmup=1, steps=2, repeats=2, small_steps=10, family_repeats=1,
                      shapes={"smollm2-135m-shape": (SMOLLM2_135M, 2, 64), "minilm-l6-shape": (MINILM_L6, 4, 64)},
                      family=["llama-1m", "llama-4m", "llama-15m", "smollm2-135m-shape"],
                      seq_model="llama-4m", seq_lengths=[32, 64, 128], peak_sizes=[1024, 2048], startup_jobs=2)
    return Budget(shapes={"smollm2-135m-shape": (SMOLLM2_135M, 4, 128), "minilm-l6-shape": (MINILM_L6, 8, 128)},
                  family=list(FAMILY), seq_lengths=[64, 128, 256, 512], peak_sizes=[1024, 2048, 4096])


def case_overrides(case: Case, steps: int, results: str) -> list[str]:
    """`lab-train` overrides: the tiny model of the case's task, resized by `compose_case`."""
    base = "tiny-bert" if case.task == "cls" else "tiny-llama"
    rows = case.batch * steps
    overrides = [
        f"method={case.method}", f"model={base}", f"dataset=synthetic-{case.task}", "logger=none",
        f"trainer.batch_size={case.batch}", f"trainer.max_steps={steps}", f"model.max_length={case.seq}",
        # Both word-level tokenizers add two tokens (<s> ... </s>, [CLS] ... [SEP]): rows are exactly `seq` long.
        f"dataset.length={case.seq - 2}",
        f"dataset.sizes={{train:{rows},validation:{case.batch},test:{case.batch}}}",
        f"paths.results={results}",
        # The cadence the published benchmark timed: logging is part of a step's fixed cost.
        "trainer.logging_steps=10",
    ]
    if case.method != "full" and case.rank is not None:
        overrides.append(f"rank={case.rank}")
    return overrides + list(case.extra)


def adapter_cases(shape: str, architecture: dict, batch: int, seq: int) -> list[Case]:
    """Every method of sweeps/peft_methods.yaml at the budget that sweep runs it at (its rank and any
    other setting of its group), on one shape: the same adapters the method comparison trains."""
    sweep = compose(["+sweep=peft_methods"], hydra=True)
    cases = []
    for group in sweep.hydra.sweeper.groups:
        settings = {key: str(value) for key, value in group.items() if key != "method.learning_rate"}
        rank = int(settings.pop("rank")) if "rank" in settings else None
        for method in settings.pop("method").split(","):
            extra = tuple(f"{key}={value}" for key, value in settings.items())
            if method == "adalora":
                # Its schedule needs more steps than a benchmark times (tinit + tfinal < total steps): every
                # timed step falls in the budgeting phase, which masks ranks at each step, its dearest.
                extra += ("method.peft.tinit=0", "method.peft.tfinal=0")
            cases.append(Case(shape, architecture, method, batch, seq, rank, extra))
    return cases


def compose_case(case: Case, steps: int, results: str) -> DictConfig:
    """The validated config `lab-train` would run for this case."""
    cfg = compose(case_overrides(case, steps, results), validated=False)
    with open_dict(cfg):
        # The cache folder is <name>-<hash of the architecture>: one build per architecture, whatever the case.
        cfg.model.name = f"bench-{case.architecture['model_type']}"
        cfg.model.architecture = dict(case.architecture)
    return validate(cfg)


def prepare(case: Case, steps: int, results: str, device: str = "auto") -> FineTune:
    """The suite's job for `case`, its data set up (`setup_data`); every row is exactly `case.seq` tokens."""
    cfg = compose_case(case, steps, results)
    job = FineTune(cfg, resolve_device(device), record.run_id(cfg))
    job.setup_data()
    lengths = {len(ids) for ids in job.tokenized["train"]["input_ids"]}
    if lengths != {case.seq}:
        raise RuntimeError(f"{case.name}: rows of {sorted(lengths)} tokens, expected exactly {case.seq}")
    return job
