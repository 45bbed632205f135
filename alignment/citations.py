"""BibTeX for the methods a model card names: the papers behind the registered losses and advantage estimators.

Each registry entry's docstring names its paper by arXiv id on its first line (`PreferenceLossSpec.summary`,
`AdvantageEstimatorSpec.summary`); `citations_for` turns those ids into BibTeX. `CITATIONS` holds full entries for
the papers whose title and authors are spelled out here (DPO, GRPO and RLOO as TRL's trainers cite them, in
`trl.DPOTrainer._paper` etc.); any other id gets a minimal `@misc` entry that links the arXiv page and quotes the
registry's one-line description, rather than a title made up here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["CITATIONS", "TRL_CITATION", "arxiv_ids", "bibtex_for", "citations_for"]

# TRL's own software citation, as TRL's model-card template prints it (trl/templates/lm_model_card.md).
TRL_CITATION = """@software{vonwerra2020trl,
  title   = {{TRL: Transformers Reinforcement Learning}},
  author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, Tristan and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallou{\\'e}dec, Quentin},
  license = {Apache-2.0},
  url     = {https://github.com/huggingface/trl},
  year    = {2020}
}"""


def _arxiv_entry(key: str, arxiv_id: str, title: str, authors: str, year: int) -> str:
    return (f"@article{{{key},\n  title   = {{{{{title}}}}},\n  author  = {{{authors}}},\n  year    = {{{year}}},\n"
            f"  eprint  = {{{arxiv_id}}},\n  archivePrefix = {{arXiv}},\n"
            f"  url     = {{https://arxiv.org/abs/{arxiv_id}}}\n}}")


# arXiv id -> BibTeX. "and others" renders as "et al." where the full author list is not spelled out here.
CITATIONS: dict[str, str] = {
    arxiv_id: _arxiv_entry(key, arxiv_id, title, authors, year)
    for arxiv_id, key, title, authors, year in [
        ("2305.18290", "rafailov2023direct",
         "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
         "Rafael Rafailov and Archit Sharma and Eric Mitchell and Christopher D. Manning and Stefano Ermon and "
         "Chelsea Finn", 2023),
        ("2402.03300", "shao2024deepseekmath",
         "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
         "Zhihong Shao and Peiyi Wang and Qihao Zhu and Runxin Xu and Junxiao Song and Mingchuan Zhang and "
         "Y. K. Li and Y. Wu and Daya Guo", 2024),
        ("2402.14740", "ahmadian2024back",
         "Back to Basics: Revisiting REINFORCE-Style Optimization for Learning from Human Feedback in LLMs",
         "Arash Ahmadian and Chris Cremer and Matthias Gall{\\'{e}} and Marzieh Fadaee and Julia Kreutzer and "
         "Olivier Pietquin and Ahmet {\\\"{U}}st{\\\"{u}}n and Sara Hooker", 2024),
        ("2310.12036", "azar2023general",
         "A General Theoretical Paradigm to Understand Learning from Human Preferences",
         "Mohammad Gheshlaghi Azar and others", 2023),
        ("2305.10425", "zhao2023slichf", "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
         "Yao Zhao and others", 2023),
        ("2403.00409", "chowdhury2024provably",
         "Provably Robust DPO: Aligning Language Models with Noisy Feedback",
         "Sayak Ray Chowdhury and Anush Kini and Nagarajan Natarajan", 2024),
        ("2404.19733", "pang2024iterative", "Iterative Reasoning Preference Optimization",
         "Richard Yuanzhe Pang and Weizhe Yuan and Kyunghyun Cho and He He and Sainbayar Sukhbaatar and "
         "Jason Weston", 2024),
        ("2405.16436", "liu2024provably",
         "Provably Mitigating Overoptimization in RLHF: Your SFT Loss is Implicitly an Adversarial Regularizer",
         "Zhihan Liu and others", 2024),
        ("2404.05868", "zhang2024negative",
         "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
         "Ruiqi Zhang and Licong Lin and Yu Bai and Song Mei", 2024),
        ("2406.08414", "lu2024discovering",
         "Discovering Preference Optimization Algorithms with and for Large Language Models",
         "Chris Lu and others", 2024),
        ("2407.08639", "wu2024betadpo", "$\\beta$-DPO: Direct Preference Optimization with Dynamic $\\beta$",
         "Junkang Wu and others", 2024),
        ("2406.11827", "zhou2024wpo", "WPO: Enhancing RLHF with Weighted Preference Optimization",
         "Wenxuan Zhou and others", 2024),
        ("2407.09072", "hu2024new", "New Desiderata for Direct Preference Optimization",
         "Xiangkun Hu and Tong He and David Wipf", 2024),
        ("2406.14868", "shi2024direct", "Direct Multi-Turn Preference Optimization for Language Agents",
         "Wentao Shi and others", 2024),
        ("2309.02144", "wang2023making", "Making Large Language Models Better Reasoners with Alignment",
         "Peiyi Wang and others", 2023),
        ("2402.08005", "gallego2024refined",
         "Refined Direct Preference Optimization with Synthetic Data for Behavioral Alignment of LLMs",
         "V{\\'\\i}ctor Gallego", 2024),
        ("2410.05102", "christopoulou2024sparsepo",
         "SparsePO: Controlling Preference Alignment of LLMs via Sparse Token Masks",
         "Fenia Christopoulou and others", 2024),
        ("2503.20783", "liu2025understanding", "Understanding R1-Zero-Like Training: A Critical Perspective",
         "Zichen Liu and others", 2025),
        ("2310.10505", "li2023remax",
         "ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method for Aligning Large Language Models",
         "Ziniu Li and others", 2023),
    ]
}

_ARXIV_ID = re.compile(r"\b(\d{4}\.\d{4,5})\b")


def arxiv_ids(text: str) -> list[str]:
    """The arXiv ids (``YYMM.NNNNN``) in ``text``, in order, without repeats."""
    return list(dict.fromkeys(_ARXIV_ID.findall(text or "")))


def bibtex_for(arxiv_id: str, description: str = "") -> str:
    """The BibTeX of ``arxiv_id``: the `CITATIONS` entry, else a `@misc` that links it and quotes ``description``."""
    if arxiv_id in CITATIONS:
        return CITATIONS[arxiv_id]
    note = description.replace("{", "(").replace("}", ")")
    return (f"@misc{{arxiv{arxiv_id.replace('.', '_')},\n  howpublished = {{arXiv:{arxiv_id}}},\n"
            + (f"  note    = {{{note}}},\n" if note else "")
            + f"  url     = {{https://arxiv.org/abs/{arxiv_id}}}\n}}")


def citations_for(summaries: Iterable[str]) -> list[str]:
    """BibTeX for every arXiv id cited in ``summaries`` (registry one-liners), each paper once, in order."""
    out: dict[str, str] = {}
    for summary in summaries:
        for arxiv_id in arxiv_ids(summary):
            out.setdefault(arxiv_id, bibtex_for(arxiv_id, summary))
    return list(out.values())
