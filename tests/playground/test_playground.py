"""The playground and the API docs in a real headless Chromium with the network off (conftest.py)."""

from __future__ import annotations

import re
import struct
import zlib

import httpx
import numpy as np
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from derivd.core import ENDPOINTS

KEY = "play-key"


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB(A) PNG (what Chromium's screenshots are) as an (h, w, channels) array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
    w, h, depth, color = header[:4]
    assert depth == 8 and color in (2, 6)
    ch = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), w * ch
    out = np.zeros((h, stride), dtype=np.int32)
    for y in range(h):
        f, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        prev = out[y - 1] if y else np.zeros(stride, np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) % 256
        else:  # sub, average, paeth: per byte, left to right
            cur = np.zeros(stride, np.int32)
            for i in range(stride):
                a = cur[i - ch] if i >= ch else 0
                b, c = prev[i], (prev[i - ch] if i >= ch else 0)
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (line[i] + pred) % 256
        out[y] = cur
    return out.reshape(h, w, ch)[:, :, :3]


def numbers(text: str) -> list[float]:
    return [float(t) for t in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)]


def wait_state(driver, *states, timeout=30):
    WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                         in states)
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def fill(driver, **fields):
    for name, value in fields.items():
        el = driver.find_element(By.ID, name)
        el.clear()
        el.send_keys(value)


def text(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def test_a_program_shows_its_gradient_hessian_jacobian_and_a_plot(browser, keyed_server):
    browser.get(keyed_server.url + "/playground")
    assert wait_state(browser, "done", "error") == "error"  # no key yet: the service's 401, shown
    assert "api key" in text(browser, "error").lower()
    x0, x1 = 1.5, -2.0
    fill(browser, apikey=KEY, program="sum(x**3) + x[0]*x[1]", point=f'{{"x": [{x0}, {x1}]}}',
         direction='{"x": [1, 0.5]}', orders="1, 2", tmin="-1", tmax="1")
    browser.find_element(By.ID, "run").click()
    assert wait_state(browser, "done", "error") == "done", text(browser, "error")
    assert numbers(text(browser, "gradient")) == [3 * x0**2 + x1, 3 * x1**2 + x0]
    assert np.array(numbers(text(browser, "hessian"))).reshape(2, 2).tolist() == [[6 * x0, 1], [1, 6 * x1]]
    assert numbers(text(browser, "value")) == [x0**3 + x1**3 + x0 * x1]
    assert "1×2" in text(browser, "nnz")
    assert "order 2" in text(browser, "legend")

    # the plot, as the screen shows it: f in black and the two polynomials in their colours
    shot = decode_png(browser.find_element(By.ID, "plot").screenshot_as_png)
    black = np.all(shot < 60, axis=2).sum()
    red = ((shot[:, :, 0] > 180) & (shot[:, :, 1] < 90) & (shot[:, :, 2] < 90)).sum()  # order 1
    blue = ((shot[:, :, 2] > 180) & (shot[:, :, 0] < 90)).sum()  # order 2
    assert black > 300 and red > 100 and blue > 100, (black, red, blue)

    # the state is in the URL: a fresh page from the link restores it (the key is not in it)
    link = browser.current_url
    assert "#" in link and KEY not in link
    browser.get("about:blank")
    browser.get(link)
    assert wait_state(browser, "done", "error") == "done"
    assert browser.find_element(By.ID, "program").get_attribute("value") == "sum(x**3) + x[0]*x[1]"
    assert numbers(text(browser, "gradient")) == [3 * x0**2 + x1, 3 * x1**2 + x0]


def test_an_error_is_shown_at_its_line_and_column(browser, keyed_server):
    program = "y = x * 2\nz = sum(y) +* 3\nz"
    answer = httpx.post(keyed_server.url + "/v1/evaluate", headers={"x-api-key": KEY},
                        json={"function": {"dsl": program}, "at": {"x": [1.0]}}).json()["error"]
    line, column = answer["detail"]["line"], answer["detail"]["column"]
    browser.get(keyed_server.url + "/playground")
    wait_state(browser, "done", "error")
    fill(browser, apikey=KEY, program=program, point='{"x": [1.0]}')
    browser.find_element(By.ID, "run").click()
    assert wait_state(browser, "error", "done") == "error"
    box = browser.find_element(By.ID, "error")
    assert (box.get_attribute("data-line"), box.get_attribute("data-column")) == (str(line), str(column))
    shown = box.text.split("\n")
    assert shown[0].startswith(f"line {line}, column {column}:")
    assert shown[-2] == program.split("\n")[line - 1] and shown[-1] == " " * (column - 1) + "^"


def test_api_docs_render_with_the_network_off(browser, server):
    browser.get(server.url + "/docs")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(ENDPOINTS))
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {f"/v1/{e}" for e in ENDPOINTS} <= paths
    browser.get(server.url + "/")
    browser.find_element(By.LINK_TEXT, "Playground").click()
    assert wait_state(browser, "done", "error") == "done"  # the default program on an open service
