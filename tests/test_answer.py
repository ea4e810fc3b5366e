"""Cited answers in the asker's language, with the real model over the real seed corpus."""

from __future__ import annotations

import pytest

from qa import ask
from qa.answer import LEAD_IN, NOT_FOUND, _with_history

# (language, question, evidence the first citation must quote)
EMPLOYEES = ["700 des 770", "700 der 770", "770人の従業員のうち700人", "700 sur 770"]
CASES = [
    ("en", "What percentage of OpenAI does Microsoft own?", ["49 pour cent"]),
    ("de", "Wie viel Prozent von OpenAI besitzt Microsoft?", ["49 pour cent"]),
    ("es", "¿Cuántos empleados de OpenAI amenazaron con renunciar?", EMPLOYEES),
    ("ja", "OpenAIの従業員のうち何人が辞めると脅しましたか？", EMPLOYEES),
    ("zh", "Cloudflare的首席执行官如何评价微软的周末？", ["Cloudflare"]),
    ("pt", "Quantos funcionários da OpenAI ameaçaram se demitir?", EMPLOYEES),
    ("fr", "Quelle entreprise le projet de puces d'IA pourrait-il concurrencer ?", ["Nvidia"]),
    ("ko", "마이크로소프트는 OpenAI에 얼마를 투자했습니까?", ["milliards de dollars"]),
]

@pytest.mark.slow
def test_follow_up_is_understood_from_the_previous_question(seed_settings):
    first = ask("Quelle part d'OpenAI Microsoft détient-il ?", settings=seed_settings)
    assert first.found
    follow = ask("Et combien a-t-il investi ?", history=[first.question], settings=seed_settings)
    assert follow.found and any("milliards de dollars" in c.evidence for c in follow.citations)


def test_short_follow_up_carries_the_previous_question():
    assert _with_history("and Microsoft?", ["Who owns OpenAI?"]) == "Who owns OpenAI? and Microsoft?"
    assert _with_history("マイクロソフトは？", ["OpenAIの所有者は？"]) == "OpenAIの所有者は？ マイクロソフトは？"
    long = "How many employees threatened to resign from OpenAI?"
    assert _with_history(long, ["Who owns OpenAI?"]) == long
    assert _with_history("and Microsoft?", []) == "and Microsoft?"
