"""The page of `senses.py --context TEXT --html FILE`: the numbers it embeds (from the same
functions as senses.py's text output), its size, and the page itself in a real browser (headless
Chromium with selenium; those tests skip where either is missing).
`python tests/test_page.py MODEL OUT.png` takes the README's screenshot the same way."""

import base64
import gzip
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict

import numpy as np
import pytest
import torch

import conftest  # noqa: F401 (the repository's modules, when this runs as a script)
import senses
from backpack import Backpack, BackpackConfig

TEXT = "The nurse said that she would be back in the morning."


def page_json(path):
    """The data a page embeds: JSON, gzipped, base64-encoded."""
    html = open(path, encoding="utf-8").read()
    packed = re.search(r'const PACKED = "([A-Za-z0-9+/=]+)"', html)[1]
    return json.loads(gzip.decompress(base64.b64decode(packed)))


def halves(b64):
    return np.frombuffer(base64.b64decode(b64), dtype="<f2").astype(np.float64)


@pytest.fixture(scope="module")
def enc():
    from tokenizer import get_tokenizer
    return get_tokenizer()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A train.py run folder holding a tiny Backpack over the GPT-2 vocabulary, its weights made
    distinct."""
    torch.manual_seed(0)
    config = BackpackConfig(block_size=128, n_layer=1, n_head=2, n_embd=32, num_senses=4)
    model = Backpack(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("run")
    torch.save({"model_args": asdict(model.config), "model": model.state_dict()}, path / "ckpt.pt")
    return path


@pytest.fixture(scope="module")
def page(run_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "nurse.html"
    senses.main(["--context", TEXT, "--init_from", str(run_dir), "--html", str(path)])
    return path


def test_the_shares_sum_to_the_models_logit_as_the_text_output_says(page, run_dir, enc):
    from pretrained import load
    model, data = load(run_dir), page_json(page)
    idx = torch.tensor([enc.encode(TEXT)])
    logits = model(idx)[0][0]
    totals, n, m = np.frombuffer(base64.b64decode(data["totals"]), dtype="<f4"), 0, 0
    for i, candidates in enumerate(data["candidates"]):
        # the model's top 10 next tokens
        assert candidates[:10] == logits[i, :50257].topk(10).indices.tolist()
        assert (i + 1 == len(data["tokens"])
                or data["next"][i] == idx[0, i + 1] and data["next"][i] in candidates)
        for w in candidates:
            shares, logit = totals[n:n + i + 1], data["logits"][m]
            contrib, text_logit = senses.contributions(model, idx, w, i)  # what --context prints
            np.testing.assert_allclose(shares, contrib.sum(0)[:i + 1].numpy(), rtol=0, atol=1e-6)
            assert logit == text_logit == pytest.approx(logits[i, w].item(), abs=1e-5)
            assert shares.sum() == pytest.approx(logit, abs=1e-4)
            n, m = n + i + 1, m + 1


def test_alpha_rows_sum_to_one_and_the_breakdowns_to_the_shares(page):
    data = page_json(page)
    T, k = len(data["tokens"]), data["k"]
    alpha = halves(data["alpha"])  # float16: the maps and the hover breakdowns
    rows = [alpha[(l * T * (T + 1) // 2 + i * (i + 1) // 2):][:i + 1]
            for l in range(k) for i in range(T)]
    assert all(abs(row.sum() - 1) < 2e-3 for row in rows)
    scores = halves(data["scores"])
    totals = np.frombuffer(base64.b64decode(data["totals"]), dtype="<f4")
    i, w = 5, data["candidates"][5][0]
    start = sum(len(c) * (p + 1) for p, c in enumerate(data["candidates"][:i]))
    # the breakdown by sense, from the float16 factors, adds up to the exact share
    for j in range(i + 1):
        at = data["score_offset"][str(w)] + data["rank"][j] * k  # word j's scores for w, by sense
        by_sense = [rows[l * T + i][j] * scores[at + l] for l in range(k)]
        assert sum(by_sense) == pytest.approx(totals[start + j], abs=2e-3)


def test_the_sense_tables_are_what_word_prints(page, run_dir, enc):
    from pretrained import load
    model, data = load(run_dir), page_json(page)
    for x, table in zip(dict.fromkeys(enc.encode(TEXT)), data["tables"]):
        expected = [[[[word, round(v, 2)] for word, v in words] for words in row] for row in
                    senses.sense_table(model, enc, x, 10)]
        assert table == expected


def test_the_page_opens_offline(page):
    html = open(page, encoding="utf-8").read()
    # no script, style or font fetched
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html)
    assert "<script src" not in html and "<link" not in html and "@import" not in html


def test_a_page_of_128_tokens_stays_under_2_mb(run_dir, enc, tmp_path):
    from pretrained import load
    model = load(run_dir)
    # num_senses=16: the paper's k
    config = BackpackConfig(block_size=128, n_layer=1, n_head=2, n_embd=32, num_senses=16)
    model = Backpack(config).eval()
    doc = os.path.join(os.path.dirname(senses.__file__), "docs", "pretrained.md")
    brown = open(doc, encoding="utf-8").read()
    text = enc.decode(enc.encode(brown)[:128])
    senses.write_page(senses.page_data(model, enc, text, "a test model"), tmp_path / "long.html")
    assert len(enc.encode(text)) == 128 and os.path.getsize(tmp_path / "long.html") < 2e6


def test_a_word_page_and_bad_input(run_dir, tmp_path):
    senses.main(["--word", "science", "--init_from", str(run_dir),
                 "--html", str(tmp_path / "science.html")])
    data = page_json(tmp_path / "science.html")
    assert data["tokens"] == [" science"] and len(data["tables"]) == 1
    with pytest.raises(ValueError, match="--html is not a setting of --bias"):
        senses.main(["--bias", "--init_from", str(run_dir), "--html", str(tmp_path / "x.html")])
    with pytest.raises(ValueError, match="the page takes 1 to block_size=128"):
        senses.main(["--context", "word " * 200, "--init_from", str(run_dir),
                     "--html", str(tmp_path / "x.html")])


def browser():
    """Headless Chromium through selenium, logging the page's console; None where either is
    missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    driver_path = shutil.which("chromedriver")
    if not driver_path:
        return None
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1500"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def open_page(driver, path):
    driver.get("file://" + os.path.abspath(path))
    for _ in range(100):  # the data is unpacked asynchronously
        if driver.execute_script("return document.body.dataset.ready"):
            return
        time.sleep(0.05)
    raise AssertionError("the page did not get ready")


def test_in_a_real_browser(page, run_dir, enc):
    driver = browser()
    if driver is None:
        pytest.skip("needs Chromium, chromedriver and selenium "
                    "(apt-get install chromium chromium-driver; pip install selenium)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.common.action_chains import ActionChains
    from pretrained import load
    try:
        open_page(driver, page)
        model, idx = load(run_dir), torch.tensor([enc.encode(TEXT)])
        tokens = driver.find_elements(By.CSS_SELECTOR, "#tokens .tok")
        assert "".join(t.text for t in tokens).strip() == TEXT
        tokens[4].click()  # position 4: " she"
        buttons = driver.find_elements(By.CSS_SELECTOR, "#targets button")
        chosen = [b for b in buttons if "chosen" in b.get_attribute("class")]
        # the actual next token
        assert len(chosen) == 1 and chosen[0].get_attribute("data-token") == str(idx[0, 5].item())
        buttons[1].click()  # the model's second most likely token
        button = driver.find_element(By.CSS_SELECTOR, "#targets button.chosen")
        target = int(button.get_attribute("data-token"))
        contrib, logit = senses.contributions(model, idx, target, 4)
        shades = [float(t.get_attribute("data-contribution")) for t in
                  driver.find_elements(By.CSS_SELECTOR, "#tokens .tok")[:5]]
        np.testing.assert_allclose(shades, contrib.sum(0)[:5].numpy(), rtol=0, atol=1e-5)
        shown_sum, shown_logit = (float(driver.find_element(By.ID, n).text)
                                  for n in ("sum", "logit"))
        assert shown_sum == pytest.approx(contrib.sum().item(), abs=1e-4)
        assert shown_logit == pytest.approx(logit, abs=1e-4)
        tokens = driver.find_elements(By.CSS_SELECTOR, "#tokens .tok")
        ActionChains(driver).move_to_element(tokens[1]).perform()
        breakdown = driver.find_element(By.ID, "breakdown").text
        assert "nurse" in breakdown and "sense 3" in breakdown  # the hovered word's share, by sense
        assert "The senses of" in driver.find_element(By.ID, "table").text
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)  # position 5
        tokens = driver.find_elements(By.CSS_SELECTOR, "#tokens .tok")
        assert tokens[5].get_attribute("class").split().count("at") == 1
        driver.find_elements(By.CSS_SELECTOR, "#maps canvas")[2].click()
        assert driver.find_element(By.ID, "sense-name").text == "2"
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_markup_in_the_text_stays_text_in_a_real_browser(run_dir, tmp_path):
    driver = browser()
    if driver is None:
        pytest.skip("needs Chromium, chromedriver and selenium "
                    "(apt-get install chromium chromium-driver; pip install selenium)")
    from selenium.webdriver.common.by import By
    text = ('x</script><script>window.pwned = 1</script><img src=q onerror="window.pwned = 2"> & '
            '<b>bold</b>')
    senses.main(["--context", text, "--init_from", str(run_dir),
                 "--html", str(tmp_path / "markup.html")])
    try:
        open_page(driver, tmp_path / "markup.html")
        tokens = driver.find_elements(By.CSS_SELECTOR, "#tokens .tok")
        assert "".join(t.text for t in tokens) == text  # shown as the characters it is
        for i in range(len(tokens)):  # every position, its candidates, breakdowns and tables drawn
            driver.find_elements(By.CSS_SELECTOR, "#tokens .tok")[i].click()
        assert driver.execute_script("return window.pwned") is None  # nothing of the text ran
        assert not driver.find_elements(By.CSS_SELECTOR,
                                        "#tokens img, #tokens b, #table img, #breakdown img")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


# python tests/test_page.py MODEL OUT.png: the README's screenshot, by the same browser
if __name__ == "__main__":
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from pretrained import load
    from tokenizer import get_tokenizer
    model, out = load(sys.argv[1]), sys.argv[2]
    n_params = sum(p.numel() for p in model.parameters())
    about = f"{sys.argv[1]}: the quickstart model ({n_params:,} parameters)"
    senses.write_page(senses.page_data(model, get_tokenizer(), TEXT, about), out + ".html")
    driver = browser()
    driver.set_window_size(1000, 1000)
    open_page(driver, out + ".html")  # position 3, " that": what makes " she" come next
    tokens = driver.find_elements(By.CSS_SELECTOR, "#tokens .tok")
    ActionChains(driver).move_to_element(tokens[1]).perform()
    driver.save_screenshot(out)
    driver.quit()
