"""Write the task's CSV: the tweets of the VADER paper's ground truth, rated by 20 people on -4..4,
the neutral ones (mean exactly 0) dropped, the rest labelled positive / negative.

    python reports/method_comparison-tweets/make_csv.py tweets.csv
"""
import csv
import io
import sys
import tarfile

from lab.paths import default_cache_dir, vader_sdist

INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"


def tweets() -> list[tuple[str, str]]:
    with tarfile.open(vader_sdist(default_cache_dir())) as outer:
        inner_bytes = outer.extractfile(INNER).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        text = inner.extractfile("hutto_ICWSM_2014/tweets_GroundTruth.txt").read().decode("utf-8")
    rows = []
    for line in text.splitlines():  # id <TAB> mean rating <TAB> tweet
        _, rating, tweet = line.split("\t", 2)
        if float(rating) != 0:
            rows.append((tweet, "positive" if float(rating) > 0 else "negative"))
    return rows


if __name__ == "__main__":
    with open(sys.argv[1], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tweet", "sentiment"])
        writer.writerows(tweets())
