"""What the survey's pages show, in the request's language (pure: no I/O): the view models the
templates render, and the built-in Russian and English texts the page YAML may replace."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.survey.form import SCALE_BOUNDS, Answer
from services.survey.page_config import PageConfig
from services.survey.requests import Language
from shared.events import Category, Scale
from shared.portal_config import Product

TEXTS: dict[Language, dict[str, str]] = {
    "en": {
        "question": "How likely are you to recommend {company} to a friend or colleague?",
        "question_product": "How likely are you to recommend {product} to a friend or colleague?",
        "comment": "What should we change so you would give us 10?",
        "service": "Send my request to the service department",
        "tested": "I tried it",
        "submit": "Send",
        "low": "Not at all likely",
        "high": "Extremely likely",
        "satisfied": "Satisfied",
        "unsatisfied": "Not satisfied",
        "thanks_promoter": "Thank you! We are glad you are happy with us.",
        "thanks_passive": "Thank you! Your answer helps us get better.",
        "thanks_detractor": "Thank you for being frank. We will look into it and get back to you.",
        "reviews": "Would you share your experience with others?",
        "optout_title": "Surveys from {company}",
        "optout_text": "You will not receive NPS surveys from us any more.",
        "optout_submit": "Do not send me surveys",
        "optout_done": "Done. You will not receive NPS surveys from us any more.",
        "optout_link": "Do not send me surveys any more",
        "title": "Your opinion",
        "change": "You have answered already; you can change your answer until the link expires.",
        "change_link": "Change my answer",
        "product_score": "Your score for {product}",
        "error_score": "Choose a score on the scale.",
        "error_no_product": "Tick at least one product you tried, or give it a score.",
        "error_comment": "The comment is too long (at most 2,000 characters).",
        "error_form": "The form has expired. Please send it again.",
        "error_malformed": "The form could not be read. Please send it again.",
        "gone_title": "This link has expired",
        "gone_text": "The survey this link belongs to is closed. Thank you for your time.",
        "unknown_title": "This link does not work",
        "unknown_text": "Please check that the whole address was copied from the message.",
        "busy_title": "Too many requests",
        "busy_text": "Please wait a minute and try again.",
    },
    "ru": {
        "question": "Насколько вероятно, что вы порекомендуете {company} другу или коллеге?",
        "question_product": (
            "Насколько вероятно, что вы порекомендуете {product} другу или коллеге?"
        ),
        "comment": "Что нам изменить, чтобы вы поставили 10?",
        "service": "Передать мой запрос в сервисный отдел",
        "tested": "Я пробовал(а)",
        "submit": "Отправить",
        "low": "Точно нет",
        "high": "Обязательно",
        "satisfied": "Доволен",
        "unsatisfied": "Не доволен",
        "thanks_promoter": "Спасибо! Мы рады, что вам у нас нравится.",
        "thanks_passive": "Спасибо! Ваш ответ помогает нам стать лучше.",
        "thanks_detractor": "Спасибо за откровенность. Мы разберёмся и свяжемся с вами.",
        "reviews": "Поделитесь впечатлениями с другими?",
        "optout_title": "Опросы компании {company}",
        "optout_text": "Вы больше не будете получать от нас NPS-опросы.",
        "optout_submit": "Не присылать мне опросы",
        "optout_done": "Готово. Вы больше не будете получать от нас NPS-опросы.",
        "optout_link": "Больше не присылать мне опросы",
        "title": "Ваше мнение",
        "change": "Вы уже ответили; ответ можно изменить, пока ссылка действует.",
        "change_link": "Изменить ответ",
        "product_score": "Ваша оценка: {product}",
        "error_score": "Выберите оценку на шкале.",
        "error_no_product": (
            "Отметьте хотя бы один продукт, который вы пробовали, или оцените его."
        ),
        "error_comment": "Комментарий слишком длинный (не больше 2000 знаков).",
        "error_form": "Форма устарела. Пожалуйста, отправьте её ещё раз.",
        "error_malformed": "Форму не удалось прочитать. Пожалуйста, отправьте её ещё раз.",
        "gone_title": "Срок действия ссылки истёк",
        "gone_text": "Опрос по этой ссылке закрыт. Спасибо, что уделили время.",
        "unknown_title": "Ссылка не работает",
        "unknown_text": "Проверьте, что адрес скопирован из письма полностью.",
        "busy_title": "Слишком много запросов",
        "busy_text": "Подождите минуту и попробуйте снова.",
    },
}
FORM_ERRORS = {
    "score": "error_score",
    "no_score": "error_score",
    "no_product": "error_no_product",
    "comment": "error_comment",
    "csrf": "error_form",
    "malformed": "error_malformed",
    "too_large": "error_malformed",
}


def texts(config: PageConfig, lang: Language, deal_survey: str | None = None) -> dict[str, str]:
    """The built-in texts of `lang` with the page YAML's replacements, and on a deal survey's
    page its own (`deal_texts`)."""
    own = config.deal_texts.get(deal_survey, {}) if deal_survey is not None else {}
    return {**TEXTS[lang], **config.texts.get(lang, {}), **own.get(lang, {})}


def pick_language(accept_language: str | None) -> Language:
    """The language of a page that has no request (a broken link): English if asked first."""
    first = (accept_language or "").split(",")[0].strip().lower()
    return "en" if first.startswith("en") else "ru"


@dataclass(frozen=True)
class Option:
    value: int
    label: str
    checked: bool


@dataclass(frozen=True)
class Question:
    """One score question: a product (or the whole equipment survey) with its options."""

    name: str
    legend: str
    options: list[Option]
    tested_name: str | None = None
    tested: bool = False


def scale_options(scale: Scale, text: Mapping[str, str], chosen: int | None) -> list[Option]:
    if scale == "binary":
        return [
            Option(1, text["satisfied"], chosen == 1),
            Option(0, text["unsatisfied"], chosen == 0),
        ]
    low, high = SCALE_BOUNDS[scale]
    return [Option(value, str(value), chosen == value) for value in range(low, high + 1)]


def page_questions(
    products: Sequence[Product],
    scale: Scale,
    text: Mapping[str, str],
    *,
    cosmetics: bool,
    company: str,
    previous: Answer | None,
    preselect: int | None,
) -> list[Question]:
    """The questions of the form, filled with the previous answer (or the link's `?score=`)."""
    if not cosmetics:
        product = products[0]
        chosen = previous.scores.get(product.sku) if previous is not None else preselect
        legend = text["question_product"].format(product=product.name, company=company)
        return [Question("score", legend, scale_options(scale, text, chosen))]
    questions = []
    for index, product in enumerate(products):
        scores = previous.scores if previous is not None else {}
        questions.append(
            Question(
                f"score_{index}",
                text["product_score"].format(product=product.name, company=company),
                scale_options(scale, text, scores.get(product.sku)),
                tested_name=f"tested_{index}",
                tested=product.sku in scores,
            )
        )
    return questions


def thanks_text(text: Mapping[str, str], category: Category | None) -> str:
    return text[f"thanks_{category or 'passive'}"]


def show_reviews(config: PageConfig, category: Category | None) -> bool:
    return bool(config.reviews.links) and (
        config.reviews.show_to == "everyone" or category == "promoter"
    )
