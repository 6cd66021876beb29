"""Conversations (`Pipeline.chat`, `Conversation.follow_up`, `run` with several --prompt): a
follow-up turn prefills only its own tokens on top of the kept KV cache, and answers exactly as
one prefill of the whole conversation with the same image does."""

import numpy as np
import pytest

from edgecompress.errors import EdgeCompressError
from tests.conftest import run_cli

FIRST, SECOND, THIRD = "What is in the picture?", "And what colour is it?", "Is there anything else?"


@pytest.mark.parametrize("bundle", ["hired-fp32", "none-fp32"])
def test_follow_ups_answer_as_one_prefill_of_the_whole_conversation(bundles, images, bundle):
    """Exact token equality. The same decoder graph reads the same tokens at the same positions,
    in chunks instead of at once: the next-token logits differ only by summation order (at most
    1.2e-7 measured, logits ~0.5, against a top-2 margin of 3e-3 or more on these images). Turn 1
    stops at max_new_tokens, so its last token is read with the next turn (the cache never read it)."""
    from edgecompress_runtime import Pipeline

    pipe = Pipeline.load(bundles[bundle])
    for name, image in images.items():
        conversation = pipe.chat(image, FIRST, max_new_tokens=6)
        assert conversation.last.stopped_by == "max_new_tokens" and conversation.pending == conversation.last.token_ids[-1:]
        for question in (SECOND, THIRD):
            history = conversation.ids + pipe.turn_ids(question)
            answer = conversation.follow_up(question, max_new_tokens=8)
            reference = pipe.generate_ids(image, history, max_new_tokens=8)
            assert answer.token_ids == reference.token_ids, (name, question)
            assert np.abs(answer.prefill_logits - reference.prefill_logits).max() < 1e-5
            assert conversation.ids == history + answer.token_ids
            assert answer.prompt_tokens == len(pipe.turn_ids(question)) + 1  # the unread last answer token, then the turn


def test_follow_up_turn_is_rendered_as_the_chat_template_renders_it(bundles, processor):
    """The manifest's follow-up template is what transformers' chat template writes after an
    answer, and tokenizing a turn on its own gives the tokens it has inside the whole conversation."""
    from edgecompress_runtime import Pipeline

    pipe = Pipeline.load(bundles["hired-fp32"])
    answer = "A red square."
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": FIRST}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                {"role": "user", "content": [{"type": "text", "text": SECOND}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    template = pipe.manifest.follow_up_template
    assert template == "</s>USER: {prompt} ASSISTANT:"
    assert text == pipe.prompt_template.replace("{prompt}", FIRST) + " " + answer + template.replace("{prompt}", SECOND)
    pieces = (pipe.prompt_ids(FIRST) + pipe.tokenizer.encode(" " + answer, add_special_tokens=False).ids
              + pipe.turn_ids(SECOND))
    assert pipe.tokenizer.encode(text, add_special_tokens=True).ids == pieces


def test_a_turn_past_the_maximum_sequence_is_refused_and_the_conversation_goes_on(bundles, images):
    from edgecompress_runtime import Pipeline

    pipe = Pipeline.load(bundles["none-fp32"])
    conversation = pipe.chat(images["scene"], FIRST, max_new_tokens=4)
    room = pipe.max_sequence - conversation.length
    with pytest.raises(EdgeCompressError, match=r"this turn adds \d+ and with \d+ new tokens that is \d+, over this "
                                                r"bundle's maximum sequence of \d+") as refused:
        conversation.follow_up(SECOND, max_new_tokens=room)
    assert f"{room} tokens are left" in refused.value.hint
    before = (list(conversation.ids), conversation.length)
    with pytest.raises(EdgeCompressError, match="takes no image placeholder"):
        conversation.follow_up("<image>\nAnother one?")
    assert (conversation.ids, conversation.length) == before  # a refused turn leaves the conversation as it was
    assert len(conversation.follow_up(SECOND, max_new_tokens=4).token_ids) == 4


def test_cli_run_with_several_prompts_answers_each_turn(bundles, images, tmp_path):
    from edgecompress_runtime import Pipeline

    images["scene"].save(tmp_path / "scene.png")
    result = run_cli("run", str(bundles["hired-fp32"]), "--image", str(tmp_path / "scene.png"),
                     "-p", FIRST, "-p", SECOND, "-n", "5", "--stats")
    assert result.returncode == 0, result.stderr
    conversation = Pipeline.load(bundles["hired-fp32"]).chat(tmp_path / "scene.png", FIRST, max_new_tokens=5)
    conversation.follow_up(SECOND, max_new_tokens=5)
    assert result.stdout.splitlines()[:2] == [turn.text for turn in conversation.turns]
    assert "new prompt tokens on the cached conversation" in result.stderr + result.stdout
