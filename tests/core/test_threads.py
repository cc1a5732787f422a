"""One compiled model serving several threads at once: each call equals the same call made alone."""

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import tokenprune as tp
from tests.conformance.cases import greedy, load_case
from tokenprune.errors import UnsupportedError
from tokenprune.rewrites.state import HookHandoff
from tokenprune.testing import make_test_inputs

SPEC = tp.load_spec("llava")
SCHEDULE = tp.Schedule([1.0, 0.6, 0.6, 0.3])  # two cuts: the second reads the first one's selection
THREADS, CALLS = 4, 10
STEPS = 4  # generated tokens per generate() call
# (images per sample, text tokens per sample): different batch sizes and prompt lengths per thread
PROMPTS = [((1,), (4,)), ((2, 1), (3, 7)), ((1, 2, 1), (5, 2, 6)), ((1,), (9,)), ((2,), (2,)), ((1, 1), (6, 3))]
KINDS = ("forward", "generate", "generate-no-cache")


def _run(compiled, batch, kind: str) -> torch.Tensor:
    if kind == "forward":
        with torch.no_grad():
            return compiled(**batch.kwargs).logits
    return greedy(compiled, batch, steps=STEPS, use_cache=kind == "generate")


@pytest.fixture(scope="module")
def served():
    """The compiled model, its jobs and each job's result and selection computed alone, in this thread."""
    model = load_case("llava", None).models["sdpa"]  # built once per test process
    compiled = tp.compile(model, SPEC, SCHEDULE)
    jobs = [(make_test_inputs(SPEC, model, list(images), list(texts), seed=i), kind)
            for i, (images, texts) in enumerate(PROMPTS) for kind in KINDS]
    alone = []
    for batch, kind in jobs:
        out = _run(compiled, batch, kind)
        alone.append((out, tp.last_selection(compiled)))
    return compiled, jobs, alone


def _same_selection(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(len(a[l]) == len(b[l]) and all(map(torch.equal, a[l], b[l])) for l in a)


def test_concurrent_calls_equal_the_same_calls_made_alone(served):
    compiled, jobs, alone = served
    start = threading.Barrier(THREADS)

    def worker(t: int) -> list[str]:
        start.wait()  # all threads enter the model together
        errors = []
        for k in range(CALLS):
            j = (t * 7 + k * 5) % len(jobs)  # a different job sequence per thread, same-shape calls collide too
            batch, kind = jobs[j]
            try:
                out = _run(compiled, batch, kind)
                selection = tp.last_selection(compiled)
            except Exception as err:  # a crash is reported as a failure of that call, with its cause
                errors.append(f"thread {t} call {k} ({kind}, job {j}): {type(err).__name__}: {err}")
                continue
            if out.shape != alone[j][0].shape or not torch.equal(out, alone[j][0]):
                errors.append(f"thread {t} call {k} ({kind}, job {j}): output differs from the call alone")
            if not _same_selection(selection, alone[j][1]):
                errors.append(f"thread {t} call {k} ({kind}, job {j}): last_selection differs from the call alone")
        return errors

    with ThreadPoolExecutor(THREADS) as pool:
        errors = [e for found in pool.map(worker, range(THREADS)) for e in found]
    assert not errors, f"{len(errors)} of {THREADS * CALLS} concurrent calls went wrong:\n" + "\n".join(errors[:10])


def test_last_selection_is_the_calling_threads(served):
    compiled, jobs, alone = served
    _run(compiled, *jobs[0])
    seen = {}

    def other_thread():
        seen["before"] = tp.last_selection(compiled)
        _run(compiled, *jobs[3])
        seen["after"] = tp.last_selection(compiled)
        seen["sources"] = tp.scoring_key_sources(compiled)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen["before"] == {} and seen["sources"].keys() == {1, 3}  # a fresh thread has run no prefill yet
    assert _same_selection(seen["after"], alone[3][1])
    assert _same_selection(tp.last_selection(compiled), alone[0][1])  # this thread's selection is untouched


def _refusals_in_another_thread(run) -> list[str]:
    """Run ``run`` in a new thread (grad mode is per thread too); the messages of the UnsupportedError it raised."""
    refused = []

    def target():
        try:
            with torch.no_grad():
                run()
        except UnsupportedError as err:
            refused.append(str(err))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return refused


def _decode_step(batch) -> dict:
    return {"input_ids": torch.tensor([[7]]), "use_cache": True,
            "attention_mask": torch.ones(1, batch.input_ids.shape[1] + 1, dtype=torch.long)}


def test_continuation_in_another_thread_than_the_prefill_is_refused(served):
    compiled, jobs, _ = served
    batch = jobs[0][0]
    with torch.no_grad():
        cache = compiled(**batch.kwargs, use_cache=True).past_key_values
    refused = _refusals_in_another_thread(lambda: compiled(**_decode_step(batch), past_key_values=cache))
    assert len(refused) == 1 and "prefill in this thread" in refused[0]


def test_continuing_a_cache_that_another_prefill_filled_is_refused(served):
    compiled, jobs, _ = served
    first, second = jobs[0][0], make_test_inputs(SPEC, compiled, [1], [4], seed=99)  # same shapes, other prompt
    step = _decode_step(first)

    def prefill_then_continue_the_first_cache():  # this prefill has the first's shapes: only the owner differs
        compiled(**second.kwargs, use_cache=True)
        compiled(**step, past_key_values=cache)

    with torch.no_grad():
        cache = compiled(**first.kwargs, use_cache=True).past_key_values
        spare = copy.deepcopy(cache)
        compiled(**step, past_key_values=copy.deepcopy(cache))  # a copy of a prompt's cache continues like it
        refused = _refusals_in_another_thread(prefill_then_continue_the_first_cache)
        assert len(refused) == 1 and "filled by another prefill" in refused[0]
        compiled(**step, past_key_values=cache)  # still fine in the thread that prefilled it
        compiled(**second.kwargs, use_cache=True)  # a new prompt in this thread: the old cache is stale
        with pytest.raises(UnsupportedError, match="filled by another prefill of this compiled model"):
            compiled(**step, past_key_values=spare)


def test_a_deep_copy_of_a_compiled_model_still_runs(served):
    compiled, jobs, alone = served
    batch, kind = jobs[1]
    copied = copy.deepcopy(compiled)  # the per-thread state is not copied (a threading.local cannot be)
    assert torch.equal(_run(copied, batch, kind), alone[1][0])


def test_the_hook_hand_off_survives_torch_compile(served):
    """The multimodal model's hook and its language model may run in frames torch.compile traces: the hand-off
    written in one must reach the other, in the calling thread only."""
    session = served[0]._tokenprune_session
    vision = torch.ones(1, 3, dtype=torch.bool)

    def hook_frame(x):
        session.hand_off(HookHandoff(vision=vision))
        return x + 1

    torch.compile(hook_frame, backend="eager")(torch.zeros(1))
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(session.take_handoff().vision))
    thread.start()
    thread.join()
    assert elsewhere == [None]  # another thread has no hand-off
    assert session.take_handoff().vision is vision and session.take_handoff().vision is None  # taken once
