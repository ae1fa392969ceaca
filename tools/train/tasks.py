"""Training documents for longctx-fot-tiny: Debian documentation text mixed with synthetic
retrieval tasks (pass keys and key-value lookups hidden in filler), as token ids.

Every document is (ids, n_prompt, answer_start): ids start with BOS; the first n_prompt ids are
the "prompt" that is split as a LongLLaMA prompt (windows, then the last last_context_length ids
plus what follows, see fot_model.split_chunks); ids from answer_start on are the answer, whose
loss is weighted up. Plain-text documents have no answer (answer_start = len(ids)).
"""
import random

# The Landmark / LongLLaMA pass-key prompt, as tools/eval/tasks.cpp builds it.
PK_TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
           "I will quiz you about the important information there.")
PK_FILLER = ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again."]
PK_QUESTION = "What is the pass key? The pass key is"

# Other phrasings, so that the skill is "find the fact", not one string.
ALT_FACTS = [
    ("The pass key is {k}. Remember it. {k} is the pass key.", "What is the pass key? The pass key is"),
    ("The secret code is {k}. Keep it in mind.", "What is the secret code? The secret code is"),
    ("My lucky number is {k}.", "What is my lucky number? My lucky number is"),
    ("The pass key is {k}.", "The pass key is"),
    ("Remember this number: {k}.", "Which number did I ask you to remember? The number is"),
]
WORD_SYL = ["ba", "do", "ku", "mi", "ra", "te", "lo", "zu", "ne", "fi", "go", "sa", "pe", "vi", "to", "ma"]
DICT_TASK = "Below is a dictionary of key: value pairs. Memorize it; I will ask you for the value of one key."


def pk_filler(k):
    return " ".join(PK_FILLER[i % 5] for i in range(k))


class TaskGen:
    def __init__(self, sp, text_ids, max_len, seed):
        """sp: SentencePieceProcessor; text_ids: 1-D int array of the tokenized corpus (documents
        separated by BOS); max_len: the training context (longest document, answer included)."""
        self.sp, self.text, self.max_len = sp, text_ids, max_len
        self.rng = random.Random(seed)
        self.bos = 1
        self.filler_tok = len(sp.encode(" ".join(PK_FILLER))) / 5.0  # tokens per filler sentence

    def enc(self, s):
        return self.sp.encode(s)

    def key(self, n_digits=5):
        r = self.rng
        if n_digits == 5 and r.random() < 0.7:
            return str(r.randint(10000, 49999))  # the evaluation's range
        return str(r.randint(10 ** (n_digits - 1), 10 ** n_digits - 1))

    def text_slice(self, n):
        """n tokens of Debian documentation text."""
        start = self.rng.randrange(0, len(self.text) - n - 1)
        return [int(t) for t in self.text[start:start + n]]

    def _fit(self, build, n_units):
        """Largest unit count (<= n_units) whose document fits max_len; build(n) -> (ids, answer_start)."""
        while True:
            ids, ans = build(n_units)
            if len(ids) <= self.max_len or n_units == 0:
                return ids[:self.max_len], ans
            n_units = max(0, n_units - max(1, int((len(ids) - self.max_len) / self.filler_tok) + 1))

    def passkey(self, target):
        """The evaluation's prompt exactly, at about `target` tokens, the key at a random depth."""
        r = self.rng
        key = self.key()
        n = max(0, int((target - 70) / self.filler_tok))
        depth = r.random() if r.random() < 0.8 else r.choice([0.0, 1.0])

        def build(n):
            kb = round(depth * n)
            info = f"The pass key is {key}. Remember it. {key} is the pass key."
            prompt = PK_TASK + "\n" + pk_filler(kb) + "\n" + info + "\n" + pk_filler(n - kb) + "\n" + PK_QUESTION
            p = [self.bos] + self.enc(prompt)
            return p + self.enc(key), len(p)

        ids, ans = self._fit(build, n)
        return ids, ans, ans

    def passkey_text(self, target):
        """A fact in other words hidden in Debian text (or filler), asked at the end."""
        r = self.rng
        key = self.key(r.choice([3, 4, 5, 5, 5, 6, 7]))
        fact, question = r.choice(ALT_FACTS)
        fact_ids = self.enc(fact.format(k=key))
        q_ids = self.enc(question)
        k_ids = self.enc(key)
        room = max(8, target - 1 - len(fact_ids) - len(q_ids) - len(k_ids))
        before = r.randint(0, room)
        if r.random() < 0.5:
            hay = self.text_slice(room)
        else:
            hay = self.enc(pk_filler(int(room / self.filler_tok) + 5))[:room]
        p = [self.bos] + hay[:before] + fact_ids + hay[before:] + q_ids
        ids = (p + k_ids)[:self.max_len]
        return ids, len(p), len(p)

    def dictionary(self, target):
        """Lines `word: value`, then `What is the value of word?\\nword:` (longctx synth --task dict)."""
        r = self.rng
        n = max(2, int((target - 40) / 9))

        def build(n):
            n = max(1, n)
            words = set()
            while len(words) < n:
                words.add("".join(r.choice(WORD_SYL) for _ in range(r.randint(2, 3))))
            words = sorted(words, key=lambda _: r.random())
            vals = [self.key() for _ in words]
            q = r.randrange(n)
            body = "".join(f"{w}: {v}\n" for w, v in zip(words, vals))
            prompt = DICT_TASK + "\n\n" + body + "\nWhat is the value of " + words[q] + "?\n" + words[q] + ":"
            p = [self.bos] + self.enc(prompt)
            return p + self.enc(vals[q]), len(p)

        ids, ans = self._fit(build, n)
        return ids, ans, ans

    def plain(self, target):
        ids = [self.bos] + self.text_slice(target - 1)
        return ids, len(ids) - self.rng.randint(0, 8), len(ids)

    def filler_doc(self, target):
        """The pass-key prompt with no key: memory distractors that look like the evaluation."""
        p = [self.bos] + self.enc(PK_TASK + "\n" + pk_filler(int(target / self.filler_tok) + 3))
        ids = p[:target]
        return ids, len(ids), len(ids)

    def sample(self, kind, target):
        return getattr(self, kind)(target)
