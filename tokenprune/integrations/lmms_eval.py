"""An lmms-eval model that runs any supported Hugging Face multimodal model pruned by tokenprune.

Registered as ``tokenprune`` through lmms-eval's entry-point group ``lmms_eval.models`` (see
``pyproject.toml``), so after ``pip install "tokenprune-mllm[lmms]"``::

    python -m lmms_eval --model tokenprune \\
        --model_args pretrained=llava-hf/llava-1.5-7b-hf,schedule=pdrop:0.5 --tasks mme --batch_size 1

``model_args``: ``pretrained`` (a hub id or directory), ``schedule`` (``fastv:K:KEEP``, ``vtw:K``,
``pdrop:RATIO``, ``sigmoid:K:ALPHA:FLOOR``, ``keep-all`` or a YAML file: a schedule, a saved search result or a
``tokenprune.yaml``; default: the ``tokenprune.yaml`` in ``pretrained``), ``spec`` (default ``auto``),
``scorer``, ``seed``, ``device``, ``dtype``, ``attn_implementation``, ``max_new_tokens``, ``use_chat_template``.
The model logic lives in :class:`PrunedVLM`, which does not need lmms-eval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokenprune.errors import TokenPruneError, describe

try:  # lmms-eval is an optional extra; without it the class still works on duck-typed requests
    from lmms_eval.api.model import lmms as _LMMSBase
except ImportError:  # pragma: no cover - exercised where lmms-eval is absent
    _LMMSBase = object

_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float32": torch.float32, "fp32": torch.float32}


def _as_bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


class PrunedVLM:
    """A processor plus a compiled model, with prompt building, generation and log-likelihoods."""

    def __init__(self, pretrained: str, schedule: str | None = None, spec: str = "auto",
                 scorer: str = "last-token-attention", seed: int = 0, device: str = "cpu", dtype: str = "auto",
                 attn_implementation: str = "sdpa", max_new_tokens: int = 32, use_chat_template: Any = "auto",
                 model=None, processor=None) -> None:
        import tokenprune as tp
        from tokenprune.saving import FILE_NAME, model_class_for, read_schedule, read_setup

        if processor is None:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(pretrained)
        if model is None:
            kwargs = {"attn_implementation": attn_implementation}
            if dtype != "auto":
                kwargs["dtype"] = _DTYPES[str(dtype)]
            model = model_class_for(pretrained).from_pretrained(pretrained, **kwargs)
        self.model = model.to(device).eval()
        self.processor = processor
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "left"  # tokenprune scores with the last prompt token: left padding only
        self.tokenizer = tokenizer
        layers = model.config.get_text_config().num_hidden_layers
        saved = Path(str(pretrained)) / FILE_NAME
        if schedule is None and saved.is_file():
            setup = read_setup(saved)
            self.pruned = setup.apply(self.model)
        elif schedule is None:
            raise TokenPruneError(describe("no schedule given", "model_args", "schedule=... or a tokenprune.yaml "
                                           "in the pretrained directory", "e.g. schedule=fastv:2:0.5"))
        else:
            self.pruned = tp.compile(self.model, spec, read_schedule(str(schedule), layers), scorer=scorer,
                                     seed=int(seed))
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        template = getattr(processor, "chat_template", None)
        self.use_chat_template = bool(template) if use_chat_template == "auto" else _as_bool(use_chat_template)
        self.image_token = getattr(processor, "image_token", "<image>")

    # ------------------------------------------------------------------ prompts
    def prompt(self, context: str, num_images: int) -> str:
        if self.use_chat_template:
            content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": context}]
            return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True)
        missing = max(0, num_images - context.count(self.image_token))
        return " ".join([self.image_token] * missing + [context]) if missing else context

    def encode(self, texts: list[str], images: list[list]) -> dict:
        flat = [img for imgs in images for img in imgs]
        kwargs = {"text": texts, "return_tensors": "pt", "padding": True}
        if flat:
            kwargs["images"] = flat
        enc = dict(self.processor(**kwargs))
        dtype = next(self.model.parameters()).dtype
        return {k: (v.to(self.device, dtype) if k == "pixel_values" else v.to(self.device)) for k, v in enc.items()}

    # ------------------------------------------------------------------ requests
    @torch.no_grad()
    def generate(self, contexts: list[str], images: list[list], gen_kwargs: dict) -> list[str]:
        """Answers for a batch of (context, images); ``gen_kwargs`` as lmms-eval passes them."""
        gen = dict(gen_kwargs or {})
        until = gen.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen.pop("temperature", 0) or 0)
        options = {"max_new_tokens": int(gen.pop("max_new_tokens", self.max_new_tokens)),
                   "do_sample": bool(gen.pop("do_sample", False)) or temperature > 0,
                   "num_beams": int(gen.pop("num_beams", 1) or 1)}
        if options["do_sample"]:
            options["temperature"] = temperature or 1.0
            if gen.get("top_p") is not None:
                options["top_p"] = float(gen["top_p"])
        prompts = [self.prompt(c, len(imgs)) for c, imgs in zip(contexts, images)]
        enc = self.encode(prompts, images)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out = self.pruned.generate(**enc, pad_token_id=pad, **options)
        texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [_cut(t, until) for t in texts]

    @torch.no_grad()
    def loglikelihood(self, context: str, continuation: str, images: list) -> tuple[float, bool]:
        """Teacher-forced log-probability of ``continuation`` and whether greedy decoding would produce it."""
        prompt = self.prompt(context, len(images))
        n_prompt = self.encode([prompt], [images])["input_ids"].shape[1]
        full = self.encode([prompt + continuation], [images])
        target = full["input_ids"][0, n_prompt:]  # (n,)
        if target.numel() == 0:
            return 0.0, True
        # Pruned logits are shorter than the input, but the continuation's text tokens are all at the end.
        # The prompt end pins the selection to the prompt's last token, as generate_until selects.
        logits = self.pruned(**full, tokenprune_prompt_end=n_prompt).logits[0, -(target.numel() + 1):-1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        total = float(logprobs.gather(1, target[:, None]).sum())
        return total, bool(torch.equal(logits.argmax(-1), target))


def _cut(text: str, until: list[str]) -> str:
    for stop in until:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


class TokenPruneLMMS(_LMMSBase):
    """lmms-eval's view of :class:`PrunedVLM`: unpacks lmms-eval requests (``Instance.args``)."""

    is_simple = True

    def __init__(self, pretrained: str, schedule: str | None = None, batch_size: int | str = 1,
                 max_batch_size: int | None = None, **kwargs) -> None:
        if _LMMSBase is not object:
            super().__init__()
        self._rank, self._world_size = 0, 1
        self.task_dict = getattr(self, "task_dict", {})
        self.batch_size = int(batch_size or 1) if str(batch_size) != "auto" else int(max_batch_size or 1)
        known = {"spec", "scorer", "seed", "device", "dtype", "attn_implementation", "max_new_tokens",
                 "use_chat_template", "model", "processor"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TokenPruneError(describe(f"unknown model_args {unknown}", "--model_args of --model tokenprune",
                                           f"pretrained, schedule, batch_size or one of {sorted(known)}"))
        self.vlm = PrunedVLM(pretrained, schedule, **kwargs)

    def _visuals(self, doc_to_visual, doc_id, task, split) -> list:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        return [v for v in (visuals or []) if v is not None]

    def generate_until(self, requests) -> list[str]:
        from tqdm.auto import tqdm

        answers = []
        args = [r.args for r in requests]
        for start in tqdm(range(0, len(args), self.batch_size), desc="tokenprune generate", disable=len(args) < 2):
            chunk = args[start:start + self.batch_size]
            contexts = [a[0] for a in chunk]
            images = [self._visuals(a[2], a[3], a[4], a[5]) for a in chunk]
            answers += self.vlm.generate(contexts, images, chunk[0][1])
        return answers

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        results = []
        for context, target, doc_to_visual, doc_id, task, split in (r.args for r in requests):
            continuation = target(self.task_dict[task][split][doc_id]) if callable(target) else target
            results.append(self.vlm.loglikelihood(context, continuation,
                                                  self._visuals(doc_to_visual, doc_id, task, split)))
        return results

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("tokenprune's lmms-eval model answers single-round requests only")
