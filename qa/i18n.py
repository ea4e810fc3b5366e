"""Labels of the chat UI in the languages of its users.

Two consumers, one table:

* the Gradio components get `gr.I18n(**LABELS)` keys, translated in the browser from its
  language (`navigator.language`), so the page follows the visitor's browser;
* the HTML we render on the server (the sources panel, error messages) picks the same labels
  from the request's `Accept-Language` header with `pick_lang()`.

English is the fallback for any other language and any missing key.
"""

from __future__ import annotations

from collections.abc import Container

__all__ = [
    "EXAMPLES",
    "LABELS",
    "LANGUAGE_NAMES",
    "LEAD_IN",
    "NOT_FOUND",
    "QUESTION_ERRORS",
    "QUOTES",
    "UI_LANGS",
    "WEAK_EVIDENCE",
    "label",
    "pick_lang",
]

UI_LANGS = ("en", "fr", "de", "es", "ja", "zh")

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "News Q&A",
        "tagline": "Ask about the OpenAI leadership crisis of November 2023, in any language. "
        "Every answer quotes the articles it comes from.",
        "empty_state": "**Ask a question in any language.**\n\n"
        "The sources are news articles in several languages about OpenAI, Sam Altman, Microsoft "
        "and Satya Nadella in November 2023. Answers come in the language of your question and "
        "quote the articles; click a number like [1] to see the passage.",
        "placeholder": "Ask anything about the news, in any language…",
        "ask": "Ask",
        "clear": "Clear",
        "conversation": "Conversation",
        "sources": "Sources",
        "sources_empty": "The passages cited in an answer appear here, with the quoted sentence highlighted.",
        "score": "score",
        "translations": "Also in other languages",
        "open_article": "Open the article",
        "loading": "The index is still loading. Try again in a moment.",
        "building": "The index is being built from the corpus. Try again in a minute or two.",
        "unavailable": "The service cannot answer right now",
        "question_n": "Question",
        "filters": "Filters",
        "filter_langs": "Languages",
        "filter_since": "From",
        "filter_until": "Until",
        "filter_sources": "Outlets",
    },
    "fr": {
        "title": "Questions sur l'actualité",
        "tagline": "Posez vos questions sur la crise à la tête d'OpenAI en novembre 2023, dans "
        "n'importe quelle langue. Chaque réponse cite les articles dont elle provient.",
        "empty_state": "**Posez une question dans n'importe quelle langue.**\n\n"
        "Les sources sont des articles de presse en plusieurs langues sur OpenAI, Sam Altman, "
        "Microsoft et Satya Nadella en novembre 2023. La réponse est donnée dans la langue de "
        "votre question et cite les articles ; cliquez sur un numéro comme [1] pour voir le passage.",
        "placeholder": "Posez une question sur l'actualité, dans n'importe quelle langue…",
        "ask": "Demander",
        "clear": "Effacer",
        "conversation": "Conversation",
        "sources": "Sources",
        "sources_empty": "Les passages cités dans une réponse s'affichent ici, la phrase citée surlignée.",
        "score": "score",
        "translations": "Aussi dans d'autres langues",
        "open_article": "Ouvrir l'article",
        "loading": "L'index est en cours de chargement. Réessayez dans un instant.",
        "building": "L'index est en cours de construction. Réessayez dans une ou deux minutes.",
        "unavailable": "Le service ne peut pas répondre pour le moment",
        "question_n": "Question",
        "filters": "Filtres",
        "filter_langs": "Langues",
        "filter_since": "Du",
        "filter_until": "Au",
        "filter_sources": "Médias",
    },
    "de": {
        "title": "Nachrichten-Fragen",
        "tagline": "Fragen Sie zur Führungskrise bei OpenAI im November 2023, in jeder Sprache. "
        "Jede Antwort zitiert die Artikel, aus denen sie stammt.",
        "empty_state": "**Stellen Sie eine Frage in einer beliebigen Sprache.**\n\n"
        "Die Quellen sind Nachrichtenartikel in mehreren Sprachen über OpenAI, Sam Altman, "
        "Microsoft und Satya Nadella im November 2023. Die Antwort kommt in der Sprache Ihrer "
        "Frage und zitiert die Artikel; klicken Sie auf eine Nummer wie [1], um die Stelle zu sehen.",
        "placeholder": "Fragen Sie etwas zu den Nachrichten, in jeder Sprache…",
        "ask": "Fragen",
        "clear": "Leeren",
        "conversation": "Unterhaltung",
        "sources": "Quellen",
        "sources_empty": "Die in einer Antwort zitierten Passagen erscheinen hier, der zitierte Satz hervorgehoben.",
        "score": "Wert",
        "translations": "Auch in anderen Sprachen",
        "open_article": "Artikel öffnen",
        "loading": "Der Index wird noch geladen. Versuchen Sie es gleich noch einmal.",
        "building": "Der Index wird aus dem Korpus erstellt. Versuchen Sie es in ein, zwei Minuten.",
        "unavailable": "Der Dienst kann gerade nicht antworten",
        "question_n": "Frage",
        "filters": "Filter",
        "filter_langs": "Sprachen",
        "filter_since": "Von",
        "filter_until": "Bis",
        "filter_sources": "Medien",
    },
    "es": {
        "title": "Preguntas sobre la actualidad",
        "tagline": "Pregunte sobre la crisis en la dirección de OpenAI de noviembre de 2023, en "
        "cualquier idioma. Cada respuesta cita los artículos de los que procede.",
        "empty_state": "**Haga una pregunta en cualquier idioma.**\n\n"
        "Las fuentes son artículos de prensa en varios idiomas sobre OpenAI, Sam Altman, "
        "Microsoft y Satya Nadella en noviembre de 2023. La respuesta llega en el idioma de su "
        "pregunta y cita los artículos; haga clic en un número como [1] para ver el pasaje.",
        "placeholder": "Pregunte lo que quiera sobre la actualidad, en cualquier idioma…",
        "ask": "Preguntar",
        "clear": "Borrar",
        "conversation": "Conversación",
        "sources": "Fuentes",
        "sources_empty": "Los pasajes citados en una respuesta aparecen aquí, con la frase citada resaltada.",
        "score": "puntuación",
        "translations": "También en otros idiomas",
        "open_article": "Abrir el artículo",
        "loading": "El índice aún se está cargando. Inténtelo de nuevo en un momento.",
        "building": "Se está construyendo el índice. Inténtelo de nuevo en uno o dos minutos.",
        "unavailable": "El servicio no puede responder ahora",
        "question_n": "Pregunta",
        "filters": "Filtros",
        "filter_langs": "Idiomas",
        "filter_since": "Desde",
        "filter_until": "Hasta",
        "filter_sources": "Medios",
    },
    "ja": {
        "title": "ニュースQ&A",
        "tagline": "2023年11月のOpenAI経営陣をめぐる騒動について、どの言語でも質問できます。"
        "回答には出典となる記事の引用が付きます。",
        "empty_state": "**どの言語でも質問できます。**\n\n"
        "情報源は、2023年11月のOpenAI、サム・アルトマン、マイクロソフト、サティア・ナデラに関する"
        "複数言語のニュース記事です。回答は質問と同じ言語で、記事を引用して示されます。"
        "[1] のような番号をクリックすると該当箇所が表示されます。",
        "placeholder": "ニュースについて、どの言語でも質問してください…",
        "ask": "質問する",
        "clear": "クリア",
        "conversation": "会話",
        "sources": "出典",
        "sources_empty": "回答で引用された箇所がここに表示され、引用文が強調されます。",
        "score": "スコア",
        "translations": "他の言語の版",
        "open_article": "記事を開く",
        "loading": "インデックスを読み込み中です。しばらくしてからもう一度お試しください。",
        "building": "コーパスからインデックスを作成中です。1〜2分後にもう一度お試しください。",
        "unavailable": "現在サービスは回答できません",
        "question_n": "質問",
        "filters": "絞り込み",
        "filter_langs": "言語",
        "filter_since": "開始日",
        "filter_until": "終了日",
        "filter_sources": "媒体",
    },
    "zh": {
        "title": "新闻问答",
        "tagline": "用任何语言提问 2023 年 11 月 OpenAI 领导层风波的相关问题。每个回答都会引用其出处文章。",
        "empty_state": "**可以用任何语言提问。**\n\n"
        "资料来源是 2023 年 11 月关于 OpenAI、萨姆·奥尔特曼、微软和萨提亚·纳德拉的多语言新闻报道。"
        "回答使用您提问的语言并引用原文；点击 [1] 等编号即可查看对应段落。",
        "placeholder": "用任何语言提出关于新闻的问题…",
        "ask": "提问",
        "clear": "清空",
        "conversation": "对话",
        "sources": "来源",
        "sources_empty": "回答中引用的段落会显示在这里，并突出显示被引用的句子。",
        "score": "得分",
        "translations": "其他语言版本",
        "open_article": "打开文章",
        "loading": "索引仍在加载，请稍后再试。",
        "building": "正在根据语料库构建索引，请一两分钟后再试。",
        "unavailable": "服务暂时无法回答",
        "question_n": "问题",
        "filters": "筛选",
        "filter_langs": "语言",
        "filter_since": "起始日期",
        "filter_until": "截止日期",
        "filter_sources": "媒体",
    },
}

# Native names, for the language badges of the sources panel.
LANGUAGE_NAMES = {
    "ar": "العربية",
    "de": "Deutsch",
    "el": "Ελληνικά",
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "hi": "हिन्दी",
    "it": "Italiano",
    "ja": "日本語",
    "ko": "한국어",
    "nl": "Nederlands",
    "pt": "Português",
    "ro": "Română",
    "ru": "Русский",
    "th": "ไทย",
    "tr": "Türkçe",
    "vi": "Tiếng Việt",
    "zh": "中文",
}

# Why a question without meaning is refused, in the languages we answer in: "no_words" (no
# letters or digits at all) and "noise" (one character repeated). `{chars}` lists what was sent,
# as code points, so that invisible characters can be seen.
QUESTION_ERRORS: dict[str, dict[str, str]] = {
    "no_words": {
        "en": "The question has no letters or digits ({chars}). Type a question in words.",
        "fr": "La question ne contient ni lettre ni chiffre ({chars}). Écrivez une question avec des mots.",
        "de": "Die Frage enthält keine Buchstaben oder Ziffern ({chars}). Schreiben Sie eine Frage in Worten.",
        "es": "La pregunta no tiene letras ni números ({chars}). Escriba una pregunta con palabras.",
        "it": "La domanda non contiene lettere né cifre ({chars}). Scriva una domanda con delle parole.",
        "pt": "A pergunta não tem letras nem algarismos ({chars}). Escreva uma pergunta com palavras.",
        "nl": "De vraag bevat geen letters of cijfers ({chars}). Typ een vraag in woorden.",
        "ja": "質問に文字も数字も含まれていません（{chars}）。言葉で質問を入力してください。",
        "zh": "问题中没有任何文字或数字（{chars}）。请用文字输入问题。",
        "ko": "질문에 글자나 숫자가 없습니다({chars}). 단어로 질문을 입력하세요.",
        "ru": "В вопросе нет ни букв, ни цифр ({chars}). Напишите вопрос словами.",
        "ar": "لا يحتوي السؤال على أي حروف أو أرقام ({chars}). اكتب سؤالًا بالكلمات.",
        "hi": "प्रश्न में कोई अक्षर या अंक नहीं है ({chars})। शब्दों में प्रश्न लिखें।",
        "tr": "Soruda hiç harf veya rakam yok ({chars}). Sorunuzu kelimelerle yazın.",
        "pl": "Pytanie nie zawiera liter ani cyfr ({chars}). Wpisz pytanie słowami.",
        "el": "Η ερώτηση δεν περιέχει γράμματα ή ψηφία ({chars}). Γράψτε μια ερώτηση με λέξεις.",
        "vi": "Câu hỏi không có chữ cái hay chữ số nào ({chars}). Hãy nhập câu hỏi bằng chữ.",
        "th": "คำถามไม่มีตัวอักษรหรือตัวเลข ({chars}) โปรดพิมพ์คำถามเป็นคำ",
        "ro": "Întrebarea nu conține litere sau cifre ({chars}). Scrieți o întrebare în cuvinte.",
    },
    "noise": {
        "en": "The question is one character repeated ({chars}). Type a real question.",
        "fr": "La question n'est qu'un caractère répété ({chars}). Posez une vraie question.",
        "de": "Die Frage besteht nur aus einem wiederholten Zeichen ({chars}). Stellen Sie eine echte Frage.",
        "es": "La pregunta es un solo carácter repetido ({chars}). Escriba una pregunta real.",
        "it": "La domanda è un solo carattere ripetuto ({chars}). Scriva una domanda vera.",
        "pt": "A pergunta é um único caractere repetido ({chars}). Escreva uma pergunta de verdade.",
        "nl": "De vraag is één herhaald teken ({chars}). Stel een echte vraag.",
        "ja": "質問が同じ文字の繰り返しだけです（{chars}）。意味のある質問を入力してください。",
        "zh": "问题只是同一个字符的重复（{chars}）。请输入一个真正的问题。",
        "ko": "질문이 같은 글자의 반복뿐입니다({chars}). 실제 질문을 입력하세요.",
        "ru": "Вопрос состоит из одного повторяющегося символа ({chars}). Задайте настоящий вопрос.",
        "ar": "السؤال مجرد حرف واحد مكرر ({chars}). اكتب سؤالًا حقيقيًا.",
        "hi": "प्रश्न में केवल एक ही वर्ण दोहराया गया है ({chars})। कोई वास्तविक प्रश्न लिखें।",
        "tr": "Soru yalnızca tekrarlanan tek bir karakterden oluşuyor ({chars}). Gerçek bir soru yazın.",
        "pl": "Pytanie to tylko jeden powtórzony znak ({chars}). Wpisz prawdziwe pytanie.",
        "el": "Η ερώτηση είναι ένας μόνο χαρακτήρας που επαναλαμβάνεται ({chars}). Γράψτε μια πραγματική ερώτηση.",
        "vi": "Câu hỏi chỉ là một ký tự lặp lại ({chars}). Hãy nhập một câu hỏi thực sự.",
        "th": "คำถามเป็นเพียงอักขระตัวเดียวซ้ำกัน ({chars}) โปรดพิมพ์คำถามจริง",
        "ro": "Întrebarea este un singur caracter repetat ({chars}). Scrieți o întrebare reală.",
    },
}

# "According to the sources:" in the languages we answer in; English for the rest.
LEAD_IN = {
    "en": "According to the sources:",
    "fr": "D'après les sources :",
    "de": "Laut den Quellen:",
    "es": "Según las fuentes:",
    "it": "Secondo le fonti:",
    "pt": "Segundo as fontes:",
    "nl": "Volgens de bronnen:",
    "ja": "資料によると：",
    "zh": "根据资料：",
    "ko": "자료에 따르면:",
    "ru": "Согласно источникам:",
    "ar": "وفقًا للمصادر:",
    "hi": "स्रोतों के अनुसार:",
    "tr": "Kaynaklara göre:",
    "pl": "Według źródeł:",
    "el": "Σύμφωνα με τις πηγές:",
    "vi": "Theo các nguồn:",
    "th": "ตามแหล่งข้อมูล:",
    "ro": "Conform surselor:",
}

NOT_FOUND = {
    "en": "I could not find an answer to this question in the articles I have.",
    "fr": "Je n'ai pas trouvé de réponse à cette question dans les articles dont je dispose.",
    "de": "Ich habe in den vorhandenen Artikeln keine Antwort auf diese Frage gefunden.",
    "es": "No encontré una respuesta a esta pregunta en los artículos que tengo.",
    "it": "Non ho trovato una risposta a questa domanda negli articoli che ho.",
    "pt": "Não encontrei uma resposta para esta pergunta nos artigos que tenho.",
    "nl": "Ik heb in de artikelen die ik heb geen antwoord op deze vraag gevonden.",
    "ja": "手元の記事には、この質問への答えが見つかりませんでした。",
    "zh": "在现有的文章中没有找到这个问题的答案。",
    "ko": "가지고 있는 기사에서 이 질문에 대한 답을 찾지 못했습니다.",
    "ru": "В имеющихся статьях я не нашёл ответа на этот вопрос.",
    "ar": "لم أجد إجابة على هذا السؤال في المقالات المتوفرة لدي.",
    "hi": "मेरे पास मौजूद लेखों में इस प्रश्न का उत्तर नहीं मिला।",
    "tr": "Elimdeki makalelerde bu sorunun cevabını bulamadım.",
    "pl": "W dostępnych artykułach nie znalazłem odpowiedzi na to pytanie.",
    "el": "Δεν βρήκα απάντηση σε αυτή την ερώτηση στα άρθρα που έχω.",
    "vi": "Tôi không tìm thấy câu trả lời cho câu hỏi này trong các bài viết hiện có.",
    "th": "ไม่พบคำตอบสำหรับคำถามนี้ในบทความที่มีอยู่",
    "ro": "Nu am găsit un răspuns la această întrebare în articolele pe care le am.",
}

QUOTES = {
    "fr": ("« ", " »"),
    "es": ("«", "»"),
    "it": ("«", "»"),
    "pt": ("«", "»"),
    "ru": ("«", "»"),
    "de": ("„", "“"),
    "ja": ("「", "」"),
    "zh": ("「", "」"),
    "ko": ("“", "”"),
}

# The lead-in of a reply whose best evidence is weak (between the "found" and the "not found"
# bands of `qa.answer.evidence_strength`): it does not assert "according to the sources".
WEAK_EVIDENCE: dict[str, str] = {
    "en": "I am not sure the articles answer this; the closest passages say:",
    "fr": "Je ne suis pas sûr que les articles répondent à cette question ; les passages les plus proches disent :",
    "de": "Ich bin nicht sicher, dass die Artikel diese Frage beantworten; die nächstliegenden Stellen sagen:",
    "es": "No estoy seguro de que los artículos respondan a esto; los pasajes más cercanos dicen:",
    "it": "Non sono sicuro che gli articoli rispondano a questa domanda; i passaggi più vicini dicono:",
    "pt": "Não tenho certeza de que os artigos respondam a isto; os trechos mais próximos dizem:",
    "nl": "Ik weet niet zeker of de artikelen dit beantwoorden; de passages die het dichtst in de buurt komen zeggen:",
    "ja": "記事がこの質問に答えているかは確かではありません。最も近い箇所は次のとおりです：",
    "zh": "不确定这些文章是否回答了这个问题；最相关的段落是：",
    "ko": "기사가 이 질문에 답하는지 확실하지 않습니다. 가장 가까운 구절은 다음과 같습니다:",
    "ru": "Не уверен, что статьи отвечают на этот вопрос; ближайшие фрагменты говорят:",
    "ar": "لست متأكدًا من أن المقالات تجيب عن هذا السؤال؛ أقرب المقاطع تقول:",
    "hi": "मुझे यकीन नहीं है कि लेख इसका उत्तर देते हैं; सबसे निकट के अंश कहते हैं:",
    "tr": "Makalelerin bunu yanıtladığından emin değilim; en yakın bölümler şöyle diyor:",
    "pl": "Nie jestem pewien, czy artykuły na to odpowiadają; najbliższe fragmenty mówią:",
    "el": "Δεν είμαι βέβαιος ότι τα άρθρα απαντούν σε αυτό· τα πιο κοντινά αποσπάσματα λένε:",
    "vi": "Tôi không chắc các bài viết trả lời được câu hỏi này; những đoạn gần nhất cho biết:",
    "th": "ไม่แน่ใจว่าบทความตอบคำถามนี้หรือไม่ ข้อความที่ใกล้เคียงที่สุดระบุว่า:",
    "ro": "Nu sunt sigur că articolele răspund la aceasta; pasajele cele mai apropiate spun:",
}

# One click away in the UI: questions the corpus answers, in several languages.
EXAMPLES = [
    "OpenAIの従業員770人のうち何人が辞めると脅したのか？",
    "¿Cuántos empleados de OpenAI amenazaron con irse a Microsoft?",
    "Pourquoi Microsoft a-t-il besoin de Sam Altman ?",
    "Welche Rolle spielte Satya Nadella?",
    "Who did Microsoft hire after Sam Altman was fired?",
    "微软为什么需要萨姆·奥尔特曼？",
]


def pick_lang(accept_language: str | None, available: Container[str] = LABELS) -> str:
    """The first of the UI languages (or of `available`) that an `Accept-Language` header asks
    for, else English.

    Quality values are honoured; region subtags are ignored (`fr-CA` → `fr`).
    """
    if not accept_language:
        return "en"
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        pieces = part.strip().split(";")
        tag = pieces[0].strip().lower()
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.split("-")[0]))
    for _, _, lang in sorted(ranked):
        if lang in available:
            return lang
    return "en"


def label(key: str, lang: str) -> str:
    """The label `key` in `lang`, falling back to English."""
    return LABELS.get(lang, LABELS["en"]).get(key) or LABELS["en"][key]
