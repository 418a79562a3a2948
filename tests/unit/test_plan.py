"""Pure logic of the mirror: whose file is at a key's path, whether an object changed, what to do."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3sync.plan import (
    LocalContent,
    LocalStat,
    MirrorAction,
    MirrorWritten,
    RemoteVersion,
    aside_name,
    plan_checked,
    plan_mirror,
    remote_changed,
    usable_etag,
)

MD5_A = "0cc175b9c0f1b6a831c399e269772661"  # md5(b"a")
SHA_A = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"  # sha256(b"a")
MD5_B = "92eb5ffee6ae2fec3ad71c777531578f"  # md5(b"b")
SHA_B = "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"  # sha256(b"b")

V1 = RemoteVersion(1, MD5_A, 1_000)
MINE = LocalStat(1, 50, ctime_ns=60, ino=7)
WRITTEN = MirrorWritten(V1, MINE, SHA_A)
A = LocalContent(1, SHA_A, MD5_A)
B = LocalContent(1, SHA_B, MD5_B)


def test_plan_mirror_examples():
    """Markers and unsafe keys are not fetched; only the mirror's untouched copy of the same version is skipped."""
    assert plan_mirror("dir/", RemoteVersion(0, ""), None, None).action is MirrorAction.MARKER
    unsafe = plan_mirror("../x", V1, None, None)
    assert unsafe.action is MirrorAction.UNSAFE
    assert "'..'" in unsafe.reason
    assert plan_mirror("a/b", V1, WRITTEN, MINE).action is MirrorAction.SKIP
    assert plan_mirror("a/b", RemoteVersion(1, MD5_B, 2_000), WRITTEN, MINE).action is MirrorAction.DOWNLOAD
    assert plan_mirror("a/b", V1, WRITTEN, None).action is MirrorAction.DOWNLOAD
    assert plan_mirror("a/b", V1, None, None).action is MirrorAction.DOWNLOAD
    assert plan_mirror("a/b", V1, None, MINE).action is MirrorAction.CHECK  # a file nobody recorded
    # Changed since the mirror wrote it: the mtime, the ctime alone (cp -p, touch -r), the inode alone.
    for touched in (LocalStat(1, 51, 60, 7), LocalStat(1, 50, 61, 7), LocalStat(1, 50, 60, 8)):
        assert plan_mirror("a/b", V1, WRITTEN, touched).action is MirrorAction.CHECK
    kept = MirrorWritten(V1, MINE, None, owned=False)
    assert plan_mirror("a/b", RemoteVersion(1, MD5_B, 2_000), kept, MINE).action is MirrorAction.KEEP_LOCAL


def test_old_records_compare_size_and_mtime_only():
    """A record from before inode and ctime were kept (zeros) still recognises the mirror's copy."""
    old = MirrorWritten(V1, LocalStat(1, 50))
    assert plan_mirror("a/b", V1, old, MINE).action is MirrorAction.SKIP


def test_change_detection_without_etags():
    """Usable ETags decide; with none (some gateways), size and LastModified do; with nothing to tell by, fetch."""
    assert not usable_etag("")
    assert not usable_etag("0" * 32)
    assert remote_changed(V1, RemoteVersion(1, MD5_B, 1_000))
    assert not remote_changed(V1, RemoteVersion(1, MD5_A, 9_999))  # same content, re-put later
    no_etag = RemoteVersion(5, "", 1_000)
    assert not remote_changed(no_etag, RemoteVersion(5, "", 1_000))
    assert remote_changed(no_etag, RemoteVersion(5, "", 2_000))  # same size, newer: fetched
    assert remote_changed(no_etag, RemoteVersion(6, "", 1_000))
    assert remote_changed(RemoteVersion(5, "", None), RemoteVersion(5, "", 1_000))  # an old record: fetch once
    assert remote_changed(RemoteVersion(5, MD5_A, 1_000), RemoteVersion(5, "", 2_000))  # ETags vanished


@pytest.mark.parametrize(
    ("policy", "action"),
    [("keep", MirrorAction.KEEP_LOCAL), ("keep-both", MirrorAction.MOVE_ASIDE), ("overwrite", MirrorAction.DOWNLOAD)],
)
def test_a_persons_file_follows_the_policy(policy, action):
    """Bytes that are neither the object's nor what the mirror wrote are a person's: the policy decides."""
    v2 = RemoteVersion(1, "c" * 32, 2_000)
    created = plan_checked(B, v2, None, None, policy)
    changed = plan_checked(B, v2, None, WRITTEN, policy)
    assert (created.action, created.reason) == (action, "created locally")
    assert (changed.action, changed.reason) == (action, "changed locally")


def test_content_decides_after_a_check():
    """The object's bytes are adopted; the mirror's own bytes with a new stat are still the mirror's."""
    assert plan_checked(A, V1, None, None, "keep").action is MirrorAction.ADOPT  # by the MD5 ETag
    multipart = RemoteVersion(1, "d41d8cd98f00b204e9800998ecf8427e-2", 1_000)
    assert plan_checked(A, multipart, SHA_A, None, "keep").action is MirrorAction.ADOPT  # by our SHA-256
    assert plan_checked(A, multipart, None, None, "keep").action is MirrorAction.KEEP_LOCAL  # nothing proves it
    v2 = RemoteVersion(1, MD5_B, 2_000)
    assert plan_checked(A, V1, None, WRITTEN, "keep").action is MirrorAction.ADOPT
    assert plan_checked(A, v2, None, WRITTEN, "keep").action is MirrorAction.DOWNLOAD  # ours, object changed
    assert plan_checked(B, v2, None, WRITTEN, "keep").action is MirrorAction.ADOPT  # holds the new version
    no_sha = MirrorWritten(V1, MINE, None)  # known by its MD5 ETag only
    assert plan_checked(A, RemoteVersion(1, "e" * 32, 3_000), None, no_sha, "keep").action is MirrorAction.DOWNLOAD


def test_aside_names():
    """``name.local-<stamp>.ext``, numbered when taken, at most 255 bytes, the extension kept."""
    assert aside_name("F0001_A.jpg", "20261202T103000") == "F0001_A.local-20261202T103000.jpg"
    assert aside_name("F0001_A.jpg", "20261202T103000", 2) == "F0001_A.local-20261202T103000-3.jpg"
    assert aside_name(".hidden", "S") == ".hidden.local-S"
    long = aside_name("é" * 120 + ".jpeg", "20261202T103000")
    assert len(long.encode()) <= 255
    assert long.endswith(".local-20261202T103000.jpeg")


@settings(max_examples=300, deadline=None)
@given(
    st.builds(RemoteVersion, st.integers(0, 3), st.sampled_from(["", MD5_A, MD5_B]), st.none() | st.integers(0, 3)),
    st.none() | st.builds(LocalStat, st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    st.none()
    | st.builds(
        MirrorWritten,
        st.builds(RemoteVersion, st.integers(0, 3), st.sampled_from(["", MD5_A]), st.none() | st.integers(0, 3)),
        st.builds(LocalStat, st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
        st.none() | st.just(SHA_A),
        st.booleans(),
    ),
)
def test_the_mirror_replaces_only_its_own_untouched_copy(remote, local, written):
    """For any record and stat: a file is fetched over only if the record is the mirror's and the stat is its own."""
    action = plan_mirror("a/b.jpg", remote, written, local).action
    if local is not None and action in {MirrorAction.DOWNLOAD, MirrorAction.SKIP}:
        assert written is not None
        assert written.owned
        assert local.same_file(written.local)
    if local is None:
        assert action is MirrorAction.DOWNLOAD


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([A, B, LocalContent(2, SHA_B, MD5_B)]),
    st.builds(RemoteVersion, st.integers(1, 2), st.sampled_from(["", MD5_A, MD5_B, "x-2"]), st.integers(0, 2)),
    st.none() | st.just(SHA_A) | st.just(SHA_B),
    st.none() | st.just(WRITTEN) | st.just(MirrorWritten(V1, MINE, None, owned=False)),
)
def test_keep_never_destroys_unknown_bytes(content, remote, remote_sha, written):
    """With the default policy, a file is replaced only if its bytes are the object's or what the mirror wrote."""
    action = plan_checked(content, remote, remote_sha, written, "keep").action
    assert action is not MirrorAction.MOVE_ASIDE
    if action is MirrorAction.DOWNLOAD:
        assert written is not None
        assert written.owned
        assert content == A  # exactly what WRITTEN says the mirror wrote
