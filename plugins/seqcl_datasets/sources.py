"""Where each data set comes from, what to check, how to read it: the one table to fix if a URL moves.

Every entry names its publisher's own URL. None of these URLs or archive
checksums could be tried where this code was written (no network there): the
GroupLens ``md5`` values are the ones GroupLens publishes next to its zips
(``ml-100k.zip.md5``), as copied by other projects; the ``u.data`` sha256 was
computed from a copy of the file and matches the size and hash prefix/suffix
recorded in the project's shared data README. Where no checksum is known
(``sha256`` and ``md5`` None), the first download's sha256 is printed and kept
beside the file, and every later use is checked against it (trust on first
use); put the printed value in this table to pin it.

``published`` is what the papers report after preprocessing (users, items,
actions; the ACLSRec paper's Table 1 in ``../shared/paper``, SPEC §1 for
ML-100K); ``seqcl data get`` prints it next to its own counts. Toys and Yelp
have none here: the ACLSRec paper's Toys row (207,725 users, 1,825,066
actions) cannot come from the 5-core file, and Yelp's release changed since
S3-Rec used it (see ``docs/datasets.md``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Remote:
    """A file to download, and what it must hash to (either checksum, or both, or none known yet)."""

    url: str
    sha256: str | None = None
    md5: str | None = None  # only where the publisher publishes md5 and no sha256 is known

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """One data set of ``seqcl data get``.

    name:          the command's NAME.
    output:        the file stem written to the data home (``Beauty`` → ``Beauty.txt``).
    remote:        the publisher's file; None when there is no direct URL (``--from`` is then required).
    member:        the file inside the archive to read (zip or tar); None: the download itself.
    member_sha256: checksum of that member (pins the content even when the archive's bytes vary).
    reader:        how to read the raw records (:data:`seqcl_datasets.prepare.READERS`).
    published:     (users, items, actions) reported after preprocessing, and by whom.
    """

    name: str
    output: str
    title: str
    remote: Remote | None
    reader: str
    member: str | None = None
    member_sha256: str | None = None
    published: tuple[int, int, int] | None = None
    published_by: str = ""
    manual: str = ""  # how to get the file when there is no direct URL


AMAZON_2014 = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
GROUPLENS = "https://files.grouplens.org/datasets/movielens/"

SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("beauty", "Beauty", "Amazon 2014 Beauty, 5-core reviews (McAuley, UCSD)",
           Remote(AMAZON_2014 + "reviews_Beauty_5.json.gz"), "amazon-json",
           published=(22363, 12101, 198502), published_by="S3-Rec, CL4SRec, ACLSRec Table 1"),
    Source("sports", "Sports_and_Outdoors", "Amazon 2014 Sports_and_Outdoors, 5-core reviews (McAuley, UCSD)",
           Remote(AMAZON_2014 + "reviews_Sports_and_Outdoors_5.json.gz"), "amazon-json",
           published=(35598, 18357, 296337), published_by="S3-Rec, CL4SRec, ACLSRec Table 1"),
    Source("toys", "Toys_and_Games", "Amazon 2014 Toys_and_Games, 5-core reviews (McAuley, UCSD)",
           Remote(AMAZON_2014 + "reviews_Toys_and_Games_5.json.gz"), "amazon-json"),
    Source("yelp", "Yelp", "Yelp Open Dataset reviews of 2019 (S3-Rec's window)",
           None, "yelp-json", member="yelp_academic_dataset_review.json",
           manual="Yelp has no direct download URL (its terms are accepted at https://www.yelp.com/dataset); "
                  "download the JSON there, then: seqcl data get yelp --from PATH (yelp_dataset.tar, "
                  "or the yelp_academic_dataset_review.json in it)"),
    Source("ml-1m", "ml-1m", "MovieLens 1M ratings (GroupLens)",
           Remote(GROUPLENS + "ml-1m.zip", md5="c4d9eecfca2ab87c1945afe126590906"), "movielens-dat",
           member="ml-1m/ratings.dat",
           published=(6040, 3416, 999611), published_by="SASRec, ACLSRec Table 1"),
    Source("ml-100k", "ml-100k", "MovieLens 100K ratings (GroupLens)",
           Remote(GROUPLENS + "ml-100k.zip", md5="0e33842e24a9c977be4e0107933c0723"), "movielens-tab",
           member="ml-100k/u.data",
           member_sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
           published=(943, 1349, 99287), published_by="SPEC §1 reference (iterative 5-core of u.data)"),
]}
