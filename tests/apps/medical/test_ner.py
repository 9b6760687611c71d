"""The recogniser over free text: sentences and long runs of words become windows, and every
entity is a character span of the text it came from."""

from apps.medical.ner import WINDOW_WORDS, EntityRecognizer
from apps.medical.settings import SHIPPED_ADAPTER
from core_model.train.metrics import entity_scores

from .conftest import ncbi


def test_entities_slice_the_texts_they_came_from(ner_adapter):
    recognizer = EntityRecognizer.load(ner_adapter)
    texts = [" ".join(s["tokens"]) for s in ncbi("test", 12)]
    long_text = " ".join(texts)  # several sentences, over WINDOW_WORDS words in all
    assert len(long_text.split()) > WINDOW_WORDS
    results = recognizer.recognize([*texts, long_text, ""])
    assert len(results) == len(texts) + 2 and results[-1] == []
    for text, entities in zip([*texts, long_text], results[:-1], strict=True):
        for entity in entities:
            assert text[entity.start : entity.end] == entity.text and entity.label == "Disease"
    assert recognizer.labels == ["Disease"]


def test_a_window_is_tagged_as_the_tagger_tags_its_words(ner_adapter):
    recognizer = EntityRecognizer.load(ner_adapter)
    sentence = ncbi("test", 1)[0]["tokens"]
    tags = recognizer.model.tag([sentence])[0]
    entities = recognizer.recognize([" ".join(sentence)])[0]
    assert len(entities) == sum(
        t.startswith("B-") or (t.startswith("I-") and (i == 0 or tags[i - 1] == "O"))
        for i, t in enumerate(tags)
    )


def test_the_shipped_recogniser_finds_the_diseases_of_test_sentences():
    recognizer = EntityRecognizer.load(SHIPPED_ADAPTER)  # on the embedded model, as the app serves it
    sentences = ncbi("test", 60)
    predicted = recognizer.model.tag([s["tokens"] for s in sentences])
    scores = entity_scores([s["tags"] for s in sentences], predicted)
    assert scores["f1"] > 0.6, scores  # 0.775 on the whole test set
