"""lab: full fine-tuning, LoRA and QLoRA runs composed by Hydra, recorded, compared."""

import logging as _logging


class _NoKernelsHubNotice(_logging.Filter):
    """bitsandbytes' CPU backend tries to fetch a 4-bit matmul kernel from the Hugging Face hub (the
    `kernels` package) on import and warns when it cannot. Its own kernel runs instead, and a user
    cannot act on it offline (the kernel is a hub download): dropped, other bitsandbytes warnings kept."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "from kernels-community" not in str(record.msg)


# Before bitsandbytes is imported: the filter sits on the logger its CPU backend will look up.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NoKernelsHubNotice())
