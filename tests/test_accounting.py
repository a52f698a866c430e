"""Parameter and memory accounting: exact counts, the measured ledger, and the analytic estimate
checked against it (weights + gradients + optimizer within 1%, saved activations within 15%)."""

import os

import pytest
import torch

from lab.memory import gpus
from bench.ledger_vs_estimate import short_run
from lab import methods, models
from lab.decisions import compute_dtype, cpu_bf16_supported
from lab.memory import estimate as accounting
from lab.memory.tables import memory as memory_table
from lab.memory.tables import params as params_table
from lab.memory import ledger
from lab.memory.compare import ACTIVATION_TOLERANCE, WGO_TOLERANCE, compare

GB = 1e9


# ---- what bitsandbytes stores ------------------------------------------------------------------

@pytest.mark.parametrize("out_features,in_features,double_quant,quant_type", [
    (37, 100, True, "nf4"),  # odd element count: packing rounds up, blocks are partial
    (64, 64, False, "nf4"),
    (96, 1000, True, "fp4"),
    (300, 1100, True, "nf4"),  # more than 256 blocks: two second-level absmax values
])
def test_estimator_stores_a_4bit_weight_exactly_as_a_real_linear4bit(out_features, in_features, double_quant,
                                                                      quant_type):
    real = accounting.measured_nf4_bytes(out_features, in_features, double_quant, quant_type)
    assumed = accounting.nf4_bytes(out_features * in_features, double_quant)
    assert (real["packed"], real["constants"]) == (assumed["packed"], assumed["constants"])
    assert real["blocksize"] == accounting.NF4_BLOCKSIZE
    assert real["nested_blocksize"] == (accounting.NESTED_BLOCKSIZE if double_quant else None)


def test_double_quantization_costs_what_the_qlora_paper_says_plus_per_matrix_codebooks():
    n = 4096 * 4096
    per_param_bits = 8 * sum(accounting.nf4_bytes(n, True).values()) / n
    paper = 4 + 8 / 64 + 32 / (64 * 256)
    assert per_param_bits == pytest.approx(paper + 8 * 1092 / n, abs=1e-12)


# ---- exact counts of the hub architectures (meta device) -----------------------------------------

def test_llama2_counts_are_exact_and_70b_uses_grouped_query_attention():
    seven = accounting.count_params(accounting.config_for("llama2-7b", "lora", 8, "qv"))
    lora = 32 * 2 * 8 * (4096 + 4096)  # a causal LM has no head that trains beside the adapter
    assert seven == {"trainable": lora, "total": 6_738_415_616 + lora, "adapter": lora}
    seventy = accounting.count_params(accounting.config_for("llama2-70b", "lora", 1, "attn"))
    # q and o: 8192 -> 8192; k and v: 8192 -> 8 heads x 128 = 1024
    assert seventy["trainable"] == 80 * (2 * (8192 + 8192) + 2 * (8192 + 1024))
    assert seventy["total"] - seventy["trainable"] == 68_976_648_192


def test_falcon_target_sets_mean_the_fused_projection():
    qv = accounting.count_params(accounting.config_for("falcon-180b", "lora", 1, "qv"))
    attn = accounting.count_params(accounting.config_for("falcon-180b", "lora", 1, "attn"))
    fused_out = (232 + 2 * 8) * 64
    assert qv["trainable"] == 80 * (14848 + fused_out)
    assert attn["trainable"] == qv["trainable"] + 80 * (14848 + 14848)


@pytest.mark.parametrize("model,paper_trainable", [("roberta-base", 0.3e6), ("roberta-large", 0.8e6)])
def test_roberta_lora_matches_the_lora_papers_table2_without_the_head(model, paper_trainable):
    plan = accounting.Plan(accounting.config_for(model, "lora", 8, "qv"))
    head = sum(p.numel() for n, p in plan.model.named_parameters() if p.requires_grad and "classifier" in n)
    adapters = plan.params()["trainable"] - head
    assert round(adapters, -5) == paper_trainable  # the paper rounds to 0.1M


def test_seed_rule_matches_20_of_its_24_cells():
    cells = params_table.seed_cells()
    nominal = dict(params_table.MODELS.values())
    matches = [(rank, column) for (rank, column), value in cells.items()
               if params_table.seed_display(params_table.rule(rank, nominal[column])) == value]
    assert len(cells) == 24 and len(matches) == 20
    assert (1, "13B") not in matches  # '288k': the rule gives 228k


def test_params_table_writes_the_specified_columns(tmp_path):
    rows = []
    for rank in (1, 8):
        counts = accounting.count_params(accounting.config_for("llama2-7b", "lora", rank, "qv"))
        rows.append({"model": "llama2-7b", "targets": "qv", "rank": rank, "trainable_params": counts["trainable"],
                     "total_params": counts["total"], "seed_value": params_table.seed_cells()[(rank, "7B")],
                     "seed_rule_2r_sqrtN": round(params_table.rule(rank, 7e9)),
                     "trainable_over_rule": round(counts["trainable"] / params_table.rule(rank, 7e9), 4)})
    path = params_table.write_csv(rows, os.path.join(tmp_path, "params_table.csv"))
    lines = open(path).read().splitlines()
    assert lines[0].split(",")[:6] == ["model", "targets", "rank", "trainable_params", "total_params", "seed_value"]
    assert lines[2].startswith("llama2-7b,qv,8,4194304,6742609920,1M,")


# ---- the measured ledger of real runs vs the estimate ------------------------------------------

RUNS = [("tiny-bert", "full", "off"), ("tiny-bert", "lora", "off"), ("tiny-bert", "qlora", "off"),
        ("tiny-bert", "qlora", "on"), ("tiny-llama", "full", "on"), ("tiny-llama", "lora", "off"),
        ("tiny-llama", "lora", "on"), ("tiny-llama", "qlora", "off")]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    results = str(tmp_path_factory.mktemp("ledger"))
    return {case: short_run(case[0], case[1], results,
                            [f"trainer.gradient_checkpointing={'true' if case[2] == 'on' else 'false'}"])
            for case in RUNS}


@pytest.mark.parametrize("case", RUNS, ids=["-".join(c) for c in RUNS])
def test_estimate_matches_the_measured_ledger(records, case):
    record = records[case]
    row = compare(record)
    assert row["estimate_error"] is None
    assert abs(row["weights+gradients+optimizer error"]) <= WGO_TOLERANCE
    assert abs(row["activations error"]) <= ACTIVATION_TOLERANCE
    memory = record["memory"]
    assert memory["ledger_total"] == (sum(memory["weights"].values()) + memory["buffers"] + memory["gradients"]
                                      + sum(memory["optimizer_state"].values()) + memory["activations"])
    # the run's own parameter count is the meta-device count
    assert record["params"] == accounting.count_params(accounting.config_for(case[0], case[1], record["rank"]))


# bf16 autocast on a CPU with bf16 instructions: the same rules, with autocast's casts (and the CPU's
# SDPA math path, which computes BERT's attention in fp32 whatever autocast gives it).
BF16_RUNS = [("tiny-bert", "full", "off"), ("tiny-bert", "lora", "on"), ("tiny-llama", "qlora", "off")]


@pytest.mark.skipif(not cpu_bf16_supported(), reason="bf16 autocast needs a CPU with bf16 instructions")
@pytest.mark.parametrize("case", BF16_RUNS, ids=["-".join(c) for c in BF16_RUNS])
def test_estimate_matches_the_measured_ledger_under_bf16_autocast(tmp_path, case):
    model, method, checkpointing = case
    gc = "true" if checkpointing == "on" else "false"
    record = short_run(model, method, str(tmp_path), [f"trainer.gradient_checkpointing={gc}", "trainer.precision=bf16"])
    assert record["precision"] == "bf16"
    row = compare(record)
    assert abs(row["weights+gradients+optimizer error"]) <= WGO_TOLERANCE
    assert abs(row["activations error"]) <= 1e-3  # exact but for a scalar or two (the fp32 runs too)


def test_ledger_categories_are_what_the_optimizer_and_autograd_hold(records):
    memory = records[("tiny-llama", "lora", "off")]["memory"]
    trainable = memory["weights"]["trainable_float32"]
    assert memory["gradients"] == trainable
    assert memory["optimizer_state"]["exp_avg"] == memory["optimizer_state"]["exp_avg_sq"] == trainable
    step = memory["measured_steps"][0]
    assert step["batch"] == 8 and step["saved_for_backward"] == memory["activations"] > 0


@pytest.mark.parametrize("model,method", [("tiny-llama", "lora"), ("tiny-bert", "qlora")])
def test_gradient_checkpointing_cuts_saved_activations(records, model, method):
    off, on = records[(model, method, "off")]["memory"], records[(model, method, "on")]["memory"]
    assert on["activations"] < 0.5 * off["activations"]
    on_step, off_step = on["measured_steps"][0], off["measured_steps"][0]
    assert off_step["checkpoint_closures"] == 0
    # The checkpoint holds what a layer gets by keyword: Llama's rotary cos/sin always, BERT's attention
    # mask only for a padded batch (the ledger's batch, the longest rows, is unpadded on synthetic data).
    assert (on_step["checkpoint_closures"] > 0) == (model == "tiny-llama" or on_step["padded"])


# ---- the activation formula on batches the synthetic runs do not produce -----------------------

TINY_ROBERTA = ["model.source=tiny", "model.architecture.hidden_size=64", "model.architecture.num_hidden_layers=2",
                "model.architecture.num_attention_heads=4", "model.architecture.intermediate_size=128",
                "model.architecture.vocab_size=512", "model.architecture.max_position_embeddings=130",
                "model.max_length=64"]


def _measure(cfg, batch_size, seq_len, padded=False, token_types=False):
    checkpoint = models.checkpoint_path(cfg.model, cfg.paths.cache)
    model = models.load_model(checkpoint, cfg.model, compute_dtype(cfg, "cpu"),
                              methods.quantization_config(cfg, "cpu", list(cfg.model.head_modules)),
                              2 if cfg.model.task == "cls" else None, "cpu")
    model = methods.apply_method(model, cfg, "cpu")
    if cfg.trainer.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    torch.manual_seed(0)
    ids = torch.randint(10, 100, (batch_size, seq_len))
    mask = torch.ones_like(ids)
    if padded:
        mask[0, -3:] = 0
    batch = {"input_ids": ids, "attention_mask": mask,
             "labels": ids.clone() if cfg.model.task == "lm" else torch.arange(batch_size) % 2}
    if token_types:
        batch["token_type_ids"] = torch.zeros_like(ids)
    batch["num_items_in_batch"] = torch.tensor(float(batch["labels"].numel()))  # as the Trainer passes it
    return ledger.measure_step(model, batch)


@pytest.mark.parametrize("model,method,targets,overrides,padded,token_types", [
    ("tiny-llama", "lora", "all-linear", ["method.dropout=0"], True, False),  # GQA k/v repeated, float masks
    ("tiny-llama", "qlora", "attn", ["trainer.gradient_checkpointing=true"], True, False),
    ("tiny-bert", "full", None, ["trainer.gradient_checkpointing=true"], True, True),
    ("tiny-bert", "lora", "attn", ["model.architecture.attention_probs_dropout_prob=0.0"], False, True),
    ("roberta-base", "lora", "all-linear", TINY_ROBERTA, False, False),
    ("roberta-base", "full", None, TINY_ROBERTA, True, False),
])
def test_activation_formula_matches_measured_saved_tensors(model, method, targets, overrides, padded, token_types):
    extra = [o if not o.startswith("model.architecture.attention_probs") else "+" + o for o in overrides]
    cfg = accounting.config_for(model, method, None if method == "full" else 4, targets, extra)
    measured = _measure(cfg, 3, 12, padded, token_types)
    estimated = accounting.estimate(cfg, "cpu", 3, 12, padded=padded, token_types=token_types)
    assert estimated["activations"] == measured["activations"]["saved_for_backward"]
    assert estimated["gradients"] == measured["gradients"]


def test_bitsandbytes_32bit_adamw_state_is_what_the_estimator_assumes():
    import bitsandbytes as bnb

    cfg = accounting.config_for("tiny-llama", "lora", 4, "qv")
    plan = accounting.Plan(cfg)
    checkpoint = models.checkpoint_path(cfg.model, cfg.paths.cache)
    model = methods.apply_method(models.load_model(checkpoint, cfg.model, torch.float32), cfg, "cpu")
    optimizer = bnb.optim.PagedAdamW32bit([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    with pytest.warns(UserWarning):  # no paging on the CPU
        optimizer.step()
    measured = ledger.optimizer_state_bytes(optimizer)
    assumed = plan.optimizer_bytes("paged_adamw_32bit")
    assert measured["by_key"] == {"state1": assumed["state1"], "state2": assumed["state2"]}


# ---- the 7B-70B memory table -------------------------------------------------------------------

def test_memory_table_sizes_and_claims():
    # the one catalog and headroom rule (lab.memory.gpus): 8.43 GB needs 10.35 GB, not an 8 GB card
    assert gpus.smallest_gpu(8.43 * GB) == "T4 (16 GB)"
    assert gpus.smallest_gpu(120 * GB) == "H200 (141 GB)"
    assert gpus.smallest_gpu(1193.36 * GB) == "17 x H100-80GB (80 GB), sharded"
    assert memory_table.held48(39.63 * GB) == "held; with headroom 44.67 GB: fits a 48 GB card"
    cfg = accounting.config_for("llama-65b", "full")
    full16 = accounting.estimate(cfg, "cuda", 1, 512, optimizer="paged_adamw_32bit", weights_dtype=torch.bfloat16,
                                 activations=False)
    params = full16["params"]["trainable"]
    assert full16["weights_gradients_optimizer"] == 12 * params > 780 * GB  # 2 + 2 + 4 + 4 bytes
    qlora = accounting.estimate(accounting.config_for("llama2-7b", "qlora", 8, "qv"), "cuda", 1, 512, activations=False)
    quantized = qlora["weights"]["frozen_4bit_packed"] + qlora["weights"]["frozen_4bit_constants"]
    # every linear layer of the 32 blocks is 4-bit; embeddings and lm_head stay fp32 (peft's kbit prep)
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    assert quantized == pytest.approx(linear * 4.127 / 8, rel=1e-3)
    assert qlora["weights"]["frozen_float32"] >= 2 * 32000 * 4096 * 4


@pytest.mark.skipif(not os.environ.get("LAB_SLOW_TESTS"), reason="pretrained models on the CPU: set LAB_SLOW_TESTS=1")
@pytest.mark.parametrize("model", ["minilm-l6", "smollm2-135m"])
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_estimate_matches_the_ledger_of_pretrained_models(tmp_path, model, method):
    row = compare(short_run(model, method, str(tmp_path)))
    assert abs(row["weights+gradients+optimizer error"]) <= WGO_TOLERANCE
    assert abs(row["activations error"]) <= ACTIVATION_TOLERANCE
