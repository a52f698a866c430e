"""lab: full fine-tuning, LoRA and QLoRA runs composed by Hydra, recorded, compared."""
