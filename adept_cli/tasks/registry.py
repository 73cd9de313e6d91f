"""The paper's 23 NLP tasks and MBPP: source, text format, label words, metrics and split rule.

Label words are real words ("yes" / "no", "positive" / "negative"), not the digit strings the reference
code verbalises labels as; COPA and WinoGrande answer with the number of the option shown in the input.
"""

from __future__ import annotations

import re
from typing import Any

from .spec import HubSource, SplitRule, Task, TaskError

HALVE = SplitRule("halve")
HOLDOUT = SplitRule("holdout")
GLUE = "nyu-mll/glue"
SUPER_GLUE = "aps/super_glue"
MRQA = "mrqa-workshop/mrqa"
NO_YES = ("no", "yes")
YES_NO = ("yes", "no")


def _pair(first: str, second: str, question: str) -> str:
    return f"{first.title()}: {{{first}}}\n{second.title()}: {{{second}}}\n{question}"


def _record(row: dict[str, Any]) -> dict[str, Any]:
    entities = row.get("entities") or []
    passage = re.sub(r"@highlight\n", "- ", row["passage"])
    return {**row, "passage": passage, "entity_list": ", ".join(dict.fromkeys(entities))}


def _mbpp(row: dict[str, Any]) -> dict[str, Any]:
    tests = row.get("test_list") or []
    code = row["code"].replace("\r\n", "\n") if isinstance(row.get("code"), str) else row.get("code")
    return {**row, "code": code, "tests": "\n".join(tests)}


def _multirc_group(row: dict[str, Any]) -> Any:
    idx = row.get("idx")
    if isinstance(idx, dict):
        return (idx.get("paragraph"), idx.get("question"))
    return (row["paragraph"], row["question"])


def _mrqa(name: str, subset: str, description: str) -> Task:
    return Task(
        name=name,
        description=description,
        kind="text",
        hub=HubSource(MRQA, filter_field="subset", filter_value=subset),
        fields=(("context", ()), ("question", ())),
        template="Context: {context}\nQuestion: {question}\nAnswer:",
        target_field="answers",
        metrics=("f1", "em"),
        split_rule=HOLDOUT,
        max_length=512,
    )


TASK_LIST: tuple[Task, ...] = (
    # -- GLUE ------------------------------------------------------------------------------------
    Task(
        name="mnli",
        description="MultiNLI: does the premise entail the hypothesis (3 classes)",
        kind="classification",
        hub=HubSource(GLUE, "mnli"),
        fields=(("premise", ()), ("hypothesis", ())),
        template=_pair("premise", "hypothesis", "Does the premise entail the hypothesis? Answer yes, maybe or no:"),
        label_words=("yes", "maybe", "no"),  # 0 entailment, 1 neutral, 2 contradiction
        metrics=("accuracy",),
        split_rule=SplitRule(
            "fixed",
            sources=(("train", "train"), ("validation", "validation_mismatched"), ("test", "validation_matched")),
        ),
    ),
    Task(
        name="qqp",
        description="Quora Question Pairs: are the two questions duplicates",
        kind="classification",
        hub=HubSource(GLUE, "qqp"),
        fields=(("question1", ()), ("question2", ())),
        template=_pair("question1", "question2", "Do the two questions ask the same thing? Answer:"),
        label_words=NO_YES,
        metrics=("accuracy", "f1"),
        split_rule=HOLDOUT,
    ),
    Task(
        name="qnli",
        description="Question NLI: does the sentence answer the question",
        kind="classification",
        hub=HubSource(GLUE, "qnli"),
        fields=(("question", ()), ("sentence", ())),
        template=_pair("question", "sentence", "Does the sentence answer the question? Answer:"),
        label_words=YES_NO,  # 0 entailment, 1 not_entailment
        metrics=("accuracy",),
        split_rule=HOLDOUT,
    ),
    Task(
        name="sst2",
        description="Stanford Sentiment Treebank: sentiment of a movie-review sentence",
        kind="classification",
        hub=HubSource(GLUE, "sst2"),
        fields=(("sentence", ()),),
        template="Sentence: {sentence}\nIs the sentiment positive or negative? Answer:",
        label_words=("negative", "positive"),
        metrics=("accuracy",),
        split_rule=HOLDOUT,
    ),
    Task(
        name="stsb",
        description="STS Benchmark: similarity of two sentences from 0 to 5 (regression)",
        kind="regression",
        hub=HubSource(GLUE, "stsb"),
        fields=(("sentence1", ()), ("sentence2", ())),
        template=_pair("sentence1", "sentence2", "How similar are the sentences, from 0 to 5? Answer:"),
        regression_step=0.2,
        metrics=("pearson", "spearman"),
        split_rule=HALVE,
    ),
    Task(
        name="mrpc",
        description="Microsoft Research Paraphrase Corpus: are the sentences paraphrases",
        kind="classification",
        hub=HubSource(GLUE, "mrpc"),
        fields=(("sentence1", ()), ("sentence2", ())),
        template=_pair("sentence1", "sentence2", "Do the sentences mean the same thing? Answer:"),
        label_words=NO_YES,
        metrics=("accuracy", "f1"),
        split_rule=HALVE,
    ),
    Task(
        name="rte",
        description="Recognising Textual Entailment",
        kind="classification",
        hub=HubSource(GLUE, "rte"),
        fields=(("premise", ("sentence1",)), ("hypothesis", ("sentence2",))),
        template=_pair("premise", "hypothesis", "Does the premise entail the hypothesis? Answer:"),
        label_words=YES_NO,  # 0 entailment, 1 not_entailment
        metrics=("accuracy",),
        split_rule=HALVE,
    ),
    Task(
        name="cola",
        description="Corpus of Linguistic Acceptability: is the sentence grammatical",
        kind="classification",
        hub=HubSource(GLUE, "cola"),
        fields=(("sentence", ()),),
        template="Sentence: {sentence}\nIs this sentence grammatically acceptable? Answer:",
        label_words=NO_YES,
        metrics=("mcc",),
        split_rule=HALVE,
    ),
    # -- SuperGLUE -------------------------------------------------------------------------------
    Task(
        name="multirc",
        description="MultiRC: is this answer to the question about the paragraph correct",
        kind="classification",
        hub=HubSource(SUPER_GLUE, "multirc"),
        fields=(("paragraph", ()), ("question", ()), ("answer", ())),
        template="Paragraph: {paragraph}\nQuestion: {question}\nCandidate answer: {answer}\nIs it correct? Answer:",
        label_words=NO_YES,
        metrics=("f1a", "em"),
        group_of=_multirc_group,
        split_rule=HALVE,
        max_length=348,
    ),
    Task(
        name="boolq",
        description="BoolQ: yes/no question about a passage",
        kind="classification",
        hub=HubSource(SUPER_GLUE, "boolq"),
        fields=(("question", ()), ("passage", ())),
        template="Passage: {passage}\nQuestion: {question}?\nAnswer:",
        label_words=NO_YES,
        metrics=("accuracy",),
        split_rule=HALVE,
    ),
    Task(
        name="wic",
        description="Word in Context: is the word used with the same sense in both sentences",
        kind="classification",
        hub=HubSource(SUPER_GLUE, "wic"),
        fields=(("word", ()), ("sentence1", ()), ("sentence2", ())),
        template=(
            "Sentence 1: {sentence1}\nSentence 2: {sentence2}\n"
            'Is the word "{word}" used with the same meaning in both sentences? Answer:'
        ),
        label_words=NO_YES,
        metrics=("accuracy",),
        split_rule=HALVE,
    ),
    Task(
        name="wsc",
        description="Winograd Schema Challenge: does the pronoun refer to the noun phrase",
        kind="classification",
        hub=HubSource(SUPER_GLUE, "wsc.fixed"),
        fields=(("text", ()), ("span1_text", ()), ("span2_text", ())),
        template='Text: {text}\nDoes "{span2_text}" refer to "{span1_text}"? Answer:',
        label_words=NO_YES,
        metrics=("accuracy",),
        split_rule=HALVE,
    ),
    Task(
        name="cb",
        description="CommitmentBank: does the premise entail the hypothesis (3 classes)",
        kind="classification",
        hub=HubSource(SUPER_GLUE, "cb"),
        fields=(("premise", ()), ("hypothesis", ())),
        template=_pair("premise", "hypothesis", "Does the premise entail the hypothesis? Answer yes, no or maybe:"),
        label_words=("yes", "no", "maybe"),  # 0 entailment, 1 contradiction, 2 neutral
        metrics=("accuracy", "macro_f1"),
        split_rule=HALVE,
    ),
    Task(
        name="record",
        description="ReCoRD: fill the @placeholder in the query with an entity from the passage",
        kind="text",
        hub=HubSource(SUPER_GLUE, "record"),
        fields=(("passage", ()), ("query", ()), ("entities", ())),
        template="Passage: {passage}\nEntities: {entity_list}\nQuery: {query}\nWhat is @placeholder? Answer:",
        prepare=_record,
        target_field="answers",
        metrics=("f1", "em"),
        split_rule=HOLDOUT,
        max_length=512,
    ),
    Task(
        name="copa",
        description="Choice of Plausible Alternatives: which option is the cause / effect",
        kind="classification",
        hub=HubSource(SUPER_GLUE, "copa"),
        fields=(("premise", ()), ("choice1", ()), ("choice2", ()), ("question", ())),
        template=(
            "Premise: {premise}\nOption 1: {choice1}\nOption 2: {choice2}\nWhich option is the {question}? Answer:"
        ),
        label_words=("1", "2"),
        metrics=("accuracy",),
        split_rule=HALVE,
    ),
    # -- MRQA 2019 -------------------------------------------------------------------------------
    _mrqa("nq", "NaturalQuestionsShort", "Natural Questions (MRQA 2019): extractive question answering"),
    _mrqa("hotpotqa", "HotpotQA", "HotpotQA (MRQA 2019): multi-hop extractive question answering"),
    _mrqa("searchqa", "SearchQA", "SearchQA (MRQA 2019): question answering over search snippets"),
    _mrqa("newsqa", "NewsQA", "NewsQA (MRQA 2019): question answering over news articles"),
    # -- Others ----------------------------------------------------------------------------------
    Task(
        name="winogrande",
        description="WinoGrande: which option fills the blank",
        kind="classification",
        hub=HubSource("allenai/winogrande", "winogrande_xl"),
        fields=(("sentence", ()), ("option1", ()), ("option2", ())),
        template="Sentence: {sentence}\nOption 1: {option1}\nOption 2: {option2}\nWhich option fills the _? Answer:",
        label_field="answer",
        label_words=("1", "2"),
        label_values=("1", "2"),
        metrics=("accuracy",),
        split_rule=HOLDOUT,
    ),
    Task(
        name="yelp",
        description="Yelp-2 (Yelp polarity): sentiment of a review",
        kind="classification",
        hub=HubSource("fancyzhx/yelp_polarity"),
        fields=(("text", ()),),
        template="Review: {text}\nIs the sentiment positive or negative? Answer:",
        label_words=("negative", "positive"),
        metrics=("accuracy",),
        split_rule=SplitRule("holdout", test_source="test", train_cap=100_000),
        local_name="yelp",
    ),
    Task(
        name="scitail",
        description="SciTail: does the premise entail the science hypothesis",
        kind="classification",
        hub=HubSource("allenai/scitail", "snli_format"),
        fields=(("sentence1", ("premise",)), ("sentence2", ("hypothesis",))),
        template="Premise: {sentence1}\nHypothesis: {sentence2}\nDoes the premise entail the hypothesis? Answer:",
        label_field="gold_label",
        label_words=YES_NO,
        label_values=("entailment", "neutral"),
        metrics=("accuracy",),
        split_rule=HALVE,
    ),
    Task(
        name="paws",
        description="PAWS-Wiki: are the sentences paraphrases",
        kind="classification",
        hub=HubSource("google-research-datasets/paws", "labeled_final"),
        fields=(("sentence1", ()), ("sentence2", ())),
        template=_pair("sentence1", "sentence2", "Do the sentences mean the same thing? Answer:"),
        label_words=NO_YES,
        metrics=("accuracy",),
        split_rule=SplitRule("fixed"),
    ),
    Task(
        name="mbpp",
        description="MBPP: write a Python function that passes the given tests",
        kind="code",
        hub=HubSource("google-research-datasets/mbpp", "full"),
        fields=(("text", ()), ("code", ()), ("test_list", ())),
        template="You are an expert Python programmer, and here is your task: {text} "
        "Your code should pass these tests:\n\n{tests}\n",
        prepare=_mbpp,
        target_field="code",
        tests_field="test_list",
        setup_field="test_setup_code",
        metrics=("pass@1",),
        split_rule=SplitRule("halve_all", holdout=50, pool=("prompt", "test", "validation", "train")),
        max_length=512,
    ),
)

TASKS: dict[str, Task] = {task.name: task for task in TASK_LIST}
ALIASES = {
    "sst-2": "sst2",
    "sts-b": "stsb",
    "yelp-2": "yelp",
    "yelp_polarity": "yelp",
    "naturalquestions": "nq",
    "natural_questions": "nq",
    "paws-wiki": "paws",
    "super_glue_record": "record",
}


def get_builtin_task(name: str) -> Task:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise TaskError(
            f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)} (or pass a task YAML file, see docs/tasks.md)"
        )
    return TASKS[key]
