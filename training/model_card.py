"""The model card (README.md, Hugging Face hub conventions) of a `model` version and of its
`hf/` export: what it was trained on, how, how far, how well, what for, and its caveats.

`card_facts` reads what a card states from the version's manifest data and its lineage in
the store; `model_card` renders it. `publish_model` writes it when the version is made
(no evaluation exists yet); `version_card` renders it again later, with the evaluations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webtext.dataset import dataset_manifests, documents_in
from webtext.markdown import markdown_table
from webtext.store import Store, VersionRef


@dataclass(frozen=True)
class CardFacts:
    """Everything a model card states, each read from the run or the store (`card_facts`)."""

    ref: VersionRef
    settings: Mapping[str, Any]  # the model version's parameters (TrainSettings and launch)
    config: Mapping[str, Any]  # GPTConfig as saved in the checkpoint
    final: Mapping[str, Any]  # the version's counts: the last value of every metric
    tokens: VersionRef
    tokens_parameters: Mapping[str, Any]
    data: VersionRef | None  # the webtext version the tokens encode
    data_card_url: str | None  # its README.md
    data_documents: int | None  # in the dataset as of that version
    tokenizer: VersionRef | None
    tokenizer_kind: str | None  # trained, or gpt2 (OpenAI's files)
    vocab_size: int | None  # the tokenizer's ids (the embedding may be padded beyond)
    init_from: VersionRef | None = None  # the model fine-tuned from
    evaluations: Sequence[tuple[VersionRef, Sequence[Mapping[str, Any]]]] = field(
        default_factory=tuple
    )  # (evaluation version, its paper table) of this model

    @property
    def size(self) -> str:
        return str(self.settings.get("model"))

    @property
    def step(self) -> int:
        return int(self.final.get("step", 0))

    @property
    def tokens_per_step(self) -> int:
        """Rows per optimizer step (micro-batch x accumulation x ranks) x block size."""
        s = self.settings
        rows = int(s["batch_size"]) * int(s["grad_accum"]) * int(s.get("ranks", 1))
        return rows * int(self.config["block_size"])


def card_facts(
    store: Store,
    ref: VersionRef,
    parameters: Mapping[str, Any],
    parents: Sequence[VersionRef],
    counts: Mapping[str, Any],
    config: Mapping[str, Any],
) -> CardFacts:
    """The facts of model version `ref` (being published, or published: a manifest's
    parameters, parents, counts and config), with its lineage read from `store` and the
    `evaluation` versions made of it so far."""
    tokens = next(p for p in parents if p.stage == "tokens")
    tokens_manifest = store.manifest(tokens)
    data = next((p for p in tokens_manifest.parents if p.stage == "webtext"), None)
    tokenizer = next((p for p in tokens_manifest.parents if p.stage == "tokenizer"), None)
    tokenizer_manifest = store.manifest(tokenizer) if tokenizer else None
    init_from = next((p for p in parents if p.stage == "model"), None)
    evaluations = [
        (m.ref, m.stats["paper_table"])
        for m in store.versions("evaluation")
        if ref in m.parents and m.stats.get("paper_table")
    ]
    return CardFacts(
        ref=ref,
        settings=parameters,
        config=config,
        final=counts,
        tokens=tokens,
        tokens_parameters=tokens_manifest.parameters,
        data=data,
        data_card_url=store.url(data, "README.md") if data else None,
        data_documents=(
            sum(documents_in(m) for m in dataset_manifests(store, data)) if data else None
        ),
        tokenizer=tokenizer,
        tokenizer_kind=tokenizer_manifest.parameters.get("kind") if tokenizer_manifest else None,
        vocab_size=tokenizer_manifest.stats.get("counts", {}).get("vocab_size")
        if tokenizer_manifest
        else None,
        init_from=init_from,
        evaluations=evaluations,
    )


def version_card(store: Store, ref: VersionRef) -> str:
    """The card of a published `model` version as of now: with the evaluations made since."""
    manifest = store.manifest(ref)
    config = manifest.stats.get("config")
    if config is None:
        raise ValueError(f"{ref} was published without its config in the manifest: no card")
    return model_card(
        card_facts(
            store, ref, manifest.parameters, manifest.parents, manifest.stats["counts"], config
        )
    )


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "–" if value is None else str(value)


def model_card(facts: CardFacts) -> str:
    """The card: YAML front matter the hub reads, then the sections people read."""
    c = facts.config
    tokens_seen = facts.step * facts.tokens_per_step
    base = f"fine-tuned from `{facts.init_from}`" if facts.init_from else "trained from scratch"
    lines = [
        "---",
        "license: mit",
        "language:",
        "- en",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        "- gpt2",
        "- webtext",
        *(["- fine-tuned"] if facts.init_from else []),
        "---",
        "",
        f"# GPT-2 {facts.size}, model version {facts.ref.version}",
        "",
        f"A GPT-2 ({facts.size}) language model {base}, on the token shards `{facts.tokens}`",
        "of this project's open rebuild of WebText (Radford et al., 2019, *Language Models are",
        "Unsupervised Multitask Learners*).",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        "| architecture | GPT-2 (pre-LayerNorm decoder, learned positions, tied embeddings) |",
        f"| size | {facts.size}: {_number(facts.final.get('parameters'))} parameters |",
        f"| layers, heads, width | {c['n_layer']}, {c['n_head']}, {c['n_embd']} |",
        f"| context | {c['block_size']:,} tokens |",
        f"| embedding rows | {c['vocab_size']:,} |",
        f"| starting weights | {base} |",
        "",
        "## Data",
        "",
        *_data_lines(facts),
        "",
        "## Tokenizer",
        "",
        *_tokenizer_lines(facts),
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| optimizer steps | {facts.step:,} of {_number(facts.settings.get('max_steps'))} |",
        f"| tokens per step | {facts.tokens_per_step:,} |",
        f"| tokens seen | {tokens_seen:,} |",
        f"| final training loss | {_number(facts.final.get('loss'))} nats/token |",
        f"| final validation loss | {_number(facts.final.get('val_loss'))} nats/token |",
        f"| peak learning rate | {_number(facts.settings.get('lr'), 6)} |",
        f"| seed | {_number(facts.settings.get('seed'))} |",
        "",
        "Every setting is in `manifest.json` (`parameters`); the loss per step in",
        "`metrics.jsonl` and `loss.png`.",
        "",
        "## Evaluation",
        "",
        *_evaluation_lines(facts),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast",
        "",
        'model = GPT2LMHeadModel.from_pretrained("hf/")  # this version\'s export folder',
        *_tokenizer_code(facts),
        "```",
        "",
        f'or, with this project: `webtext sample --model {facts.ref.version} --prompt "..."`.',
        "",
        "## Intended use",
        "",
        "Research: studying language models trained on web text, reproducing GPT-2's",
        "pipeline, detection of generated text (`webtext outputs`), and fine-tuning",
        "(`webtext train --init-from " + facts.ref.version + "`). It is not a product: do not",
        "use it where its output would be taken as fact or as a person's words.",
        "",
        "## Limitations, biases and misuse",
        "",
        "As the GPT-2 paper and OpenAI's release notes say of GPT-2: the model continues text",
        "the way its training pages did, so it reproduces their biases (about gender, race,",
        "religion and more) and their errors, and states false things fluently. The pages",
        "are what Reddit users linked to, which skews towards the topics, language (English)",
        "and views of those users. Generated text can be used to deceive (fake news,",
        "impersonation, spam); OpenAI released GPT-2 in stages for that reason. Do not present",
        "its samples as written by a person; disclose that text is generated.",
        "",
        "## Licence",
        "",
        "Weights and code: MIT. The training texts belong to their authors and publishers;",
        "see the dataset card for what was collected and how removal requests are honoured.",
        "",
    ]
    return "\n".join(lines)


def _data_lines(facts: CardFacts) -> list[str]:
    shards = facts.tokens_parameters
    held_out = shards.get("val_fraction")
    lines = [f"- token shards: `{facts.tokens}`"]
    if facts.data is not None:
        documents = "" if facts.data_documents is None else f", {facts.data_documents:,} documents"
        lines.append(f"- dataset: `{facts.data}`{documents}")
        if facts.data_card_url:
            lines.append(f"- dataset card: [{facts.data}/README.md]({facts.data_card_url})")
    if held_out is not None:
        lines.append(f"- held out for validation: {held_out:.2%} of documents (by doc id hash)")
    if shards.get("prefix_template"):
        lines.append(f"- each document prefixed with `{shards['prefix_template']!r}`")
    return lines


def _tokenizer_lines(facts: CardFacts) -> list[str]:
    if facts.tokenizer is None:
        return ["None recorded in the lineage: use the tokenizer the token shards were made with."]
    return [
        f"`{facts.tokenizer}` ({facts.tokenizer_kind}), {_number(facts.vocab_size)} ids, "
        "byte-level BPE with GPT-2's pre-tokenisation; `<|endoftext|>` separates documents.",
        "Its files are in `hf/` (`tokenizer.json`, or `vocab.json` + `merges.txt`).",
    ]


def _tokenizer_code(facts: CardFacts) -> list[str]:
    if facts.tokenizer_kind == "trained":
        return [
            'tokenizer = PreTrainedTokenizerFast(tokenizer_file="hf/tokenizer.json", '
            'eos_token="<|endoftext|>")'
        ]
    return ["# hf/vocab.json and hf/merges.txt are OpenAI's GPT-2 vocabulary files"]


def _evaluation_lines(facts: CardFacts) -> list[str]:
    if not facts.evaluations:
        return [
            "None when this card was written. `webtext evaluate --model "
            f"{facts.ref.version}` scores it zero-shot as in the paper's Table 3;",
            f"`webtext card {facts.ref.version}` then writes this card with that table.",
        ]
    lines: list[str] = []
    for ref, table in facts.evaluations:
        lines += [f"Zero-shot, `{ref}` (the paper's Table 3 layout; – not run):", ""]
        lines += [markdown_table(table)]
    return lines
