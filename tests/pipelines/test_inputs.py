"""Input discovery, manifests and deterministic video ids (no Ray, no decoding)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featcomp.errors import PipelineError
from featcomp.pipelines.inputs import VideoInput, discover, is_url, read_manifest


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "videos"
    for rel in ["a.mp4", "sub/b.MKV", "sub/deeper/c.avi", "notes.txt", "sub/.hidden.mp4", "img.png"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return root


def test_directory_is_recursive_by_extension_with_relative_ids(tree):
    found = discover([str(tree)])
    assert [v.video_id for v in found] == ["a.mp4", "sub/b.MKV", "sub/deeper/c.avi"]
    assert all(os.path.isabs(v.path) and os.path.exists(v.path) for v in found)
    assert found[1].path == str(tree / "sub" / "b.MKV")


def test_ids_do_not_depend_on_the_working_directory(tree, monkeypatch):
    first = discover([str(tree)])
    monkeypatch.chdir(tree.parent)
    assert discover(["videos"]) == first
    monkeypatch.chdir(tree / "sub")
    assert [v.video_id for v in discover([".."])] == [v.video_id for v in first]


def test_single_file_and_glob(tree):
    assert discover([str(tree / "sub" / "b.MKV")]) == [VideoInput("b.MKV", str(tree / "sub" / "b.MKV"))]
    found = discover([str(tree / "sub" / "**" / "*.avi")])
    assert [v.video_id for v in found] == ["deeper/c.avi"]
    found = discover([str(tree / "*.mp4")])
    assert [v.video_id for v in found] == ["a.mp4"]


def test_extensions_filter(tree):
    assert [v.video_id for v in discover([str(tree)], extensions=(".avi",))] == ["sub/deeper/c.avi"]


def test_same_path_twice_is_kept_once_but_an_id_clash_is_an_error(tree, tmp_path):
    assert len(discover([str(tree), str(tree / "a.mp4")])) == 3  # a.mp4 both times, same path
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.mp4").write_bytes(b"y")
    with pytest.raises(PipelineError, match="a.mp4"):
        discover([str(tree), str(other)])


def test_missing_inputs_are_errors_that_name_them(tmp_path):
    with pytest.raises(PipelineError, match="nope.mp4"):
        discover([str(tmp_path / "nope.mp4")])
    with pytest.raises(PipelineError, match="no inputs"):
        discover([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="no video files"):
        discover([str(tmp_path / "empty")])
    with pytest.raises(PipelineError, match="matched no video"):
        discover([str(tmp_path / "*.mp4")])


def test_csv_manifest_with_header_ids_and_relative_paths(tmp_path):
    (tmp_path / "m").mkdir()
    m = tmp_path / "m" / "list.csv"
    m.write_text("video_id,path,label\nclip-1,a.mp4,3\n,sub/b.mp4,4\nclip-3,/abs/c.mp4,5\n\n")
    found = discover([str(m)])
    assert found == [
        VideoInput("clip-1", str(tmp_path / "m" / "a.mp4")),
        VideoInput("clip-3", "/abs/c.mp4"),
        VideoInput("sub/b.mp4", str(tmp_path / "m" / "sub" / "b.mp4")),
    ]


def test_csv_manifest_without_header_and_tsv(tmp_path):
    m = tmp_path / "list.csv"
    m.write_text("x/a.mp4,first\nx/b.mp4\n")
    assert [(v.video_id, os.path.basename(v.path)) for v in read_manifest(str(m))] == [("first", "a.mp4"), ("x/b.mp4", "b.mp4")]
    t = tmp_path / "list.tsv"
    t.write_text("file\tname\nq.mp4\tQ\n")
    assert [v.video_id for v in read_manifest(str(t))] == ["Q"]


def test_text_manifest_skips_comments_and_accepts_ids(tmp_path):
    m = tmp_path / "list.txt"
    m.write_text("# my videos\n\n./a.mp4\nb.mp4\tbee\ns3://bucket/c.mp4\n")
    found = read_manifest(str(m))
    assert [(v.video_id, v.path) for v in found] == [
        ("a.mp4", str(tmp_path / "a.mp4")),
        ("bee", str(tmp_path / "b.mp4")),
        ("bucket/c.mp4", "s3://bucket/c.mp4"),
    ]


def test_parquet_manifest(tmp_path):
    m = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": ["a.mp4", "b.mp4"], "video_id": ["A", None]}), m)
    assert [v.video_id for v in discover([str(m)])] == ["A", "b.mp4"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"nothing": [1]}), bad)
    with pytest.raises(PipelineError, match="no path column"):
        read_manifest(str(bad))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(PipelineError, match="junk.parquet"):
        read_manifest(str(tmp_path / "junk.parquet"))


def test_manifest_ids_that_escape_the_root_are_rejected(tmp_path):
    m = tmp_path / "list.txt"
    m.write_text("../up.mp4\n")
    with pytest.raises(PipelineError, match="explicit id"):
        read_manifest(str(m))


def test_fsspec_urls_directory_glob_file_and_manifest():
    import fsspec

    fs = fsspec.filesystem("memory")
    for p in ["/fc-test/v/a.mp4", "/fc-test/v/s/b.mp4", "/fc-test/v/readme.md"]:
        fs.pipe(p, b"1")
    fs.pipe("/fc-test/list.csv", b"path,id\nv/a.mp4,AA\n")
    try:
        assert [v.video_id for v in discover(["memory://fc-test/v"])] == ["a.mp4", "s/b.mp4"]
        assert [v.video_id for v in discover(["memory://fc-test/v/*/*.mp4"])] == ["s/b.mp4"]
        assert discover(["memory://fc-test/v/a.mp4"]) == [VideoInput("a.mp4", "memory://fc-test/v/a.mp4")]
        (m,) = discover(["memory://fc-test/list.csv"])
        assert m.video_id == "AA" and m.path.startswith("memory://") and m.path.endswith("/fc-test/v/a.mp4")
    finally:
        fs.rm("/fc-test", recursive=True)


def test_is_url():
    assert is_url("s3://b/k") and is_url("https://x/y.mp4") and is_url("memory://x")
    assert not is_url("/a/b.mp4") and not is_url("file:///a/b.mp4") and not is_url("C:\\v.mp4")


# ------------------------------------------------------------------ links, odd names (issue 14)
@pytest.mark.timeout(30)
def test_a_directory_link_to_its_parent_yields_each_video_once(tree):
    os.symlink("..", tree / "sub" / "up")  # sub/up -> videos
    os.symlink(tree / "sub", tree / "again")  # a second path to sub: walked once, under the first name
    got = discover([str(tree)])
    assert [v.video_id for v in got] == ["a.mp4", "again/b.MKV", "again/deeper/c.avi"]  # sorted names: "again" first
    assert len({os.path.realpath(v.path) for v in got}) == 3


@pytest.mark.timeout(30)
def test_two_links_to_the_parent_do_not_hang(tree):
    os.symlink("..", tree / "sub" / "up1")
    os.symlink("../..", tree / "sub" / "deeper" / "up2")
    got = discover([str(tree)])  # before: never returned (every path through both links)
    assert sorted(v.video_id for v in got) == ["a.mp4", "sub/b.MKV", "sub/deeper/c.avi"]


@pytest.mark.timeout(30)
def test_a_recursive_glob_through_links_to_the_parent_does_not_hang(tree):
    os.symlink("..", tree / "sub" / "up1")
    os.symlink("../..", tree / "sub" / "deeper" / "up2")
    got = discover([str(tree / "**" / "*.mp4"), str(tree / "sub" / "**" / "c.*")])  # was: glob.glob never returned
    assert [v.video_id for v in got] == ["a.mp4", "deeper/c.avi"]
    assert [v.video_id for v in discover([str(tree / "**")])] == ["a.mp4", "sub/b.MKV", "sub/deeper/c.avi"]


def test_names_with_newlines_and_non_utf8_bytes_get_valid_reversible_ids(tmp_path):
    from featcomp.store.format import check_video_id
    from featcomp.pipelines.inputs import id_to_name, local_path

    root = tmp_path / "v"
    root.mkdir()
    names = [b"new\nline.mp4", b"caf\xe9.mp4", b"100%25 real.mp4", b"plain.mp4", b"cr\r.mp4"]
    for n in names:
        (root / os.fsdecode(n)).write_bytes(b"x")
    got = discover([str(root)])
    ids = {v.video_id for v in got}
    assert ids == {"new%0Aline.mp4", "caf%E9.mp4", "100%2525 real.mp4", "plain.mp4", "cr%0D.mp4"}
    for v in got:
        check_video_id(v.video_id)  # the store accepts it (was: a job-level abort for the newline)
        v.video_id.encode("utf-8")  # and it is valid UTF-8 (was: accepted, then failed at close())
        v.path.encode("utf-8")  # the path travels through Arrow
        assert os.fsencode(id_to_name(v.video_id)) in names
        assert os.path.exists(local_path(v.path))
        assert os.fsencode(os.path.basename(local_path(v.path))) == os.fsencode(id_to_name(v.video_id))
    assert discover([str(root)]) == got  # deterministic


def test_ids_of_ordinary_names_are_unchanged(tree):
    assert [v.video_id for v in discover([str(tree)])] == ["a.mp4", "sub/b.MKV", "sub/deeper/c.avi"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# names as the OS gives them: arbitrary bytes, decoded with surrogateescape (os.fsdecode)
_name_bytes = st.lists(st.one_of(st.binary(min_size=1, max_size=3),
                                 st.sampled_from([b"%", b"0a", b"F", b"\n", b"\r", b"/", "é".encode(), b"\xe9"])),
                       min_size=1, max_size=12).map(b"".join)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_name_bytes.map(os.fsdecode))
def test_name_to_id_is_reversible_and_valid(name):
    from featcomp.store.format import check_video_id
    from featcomp.pipelines.inputs import id_to_name, name_to_id, transport_path, local_path

    name = name.replace("\x00", "")
    if not name:
        return
    vid = name_to_id(name)
    assert id_to_name(vid) == name
    vid.encode("utf-8")
    check_video_id(vid)
    assert local_path(transport_path(name)) == name and transport_path(name).encode("utf-8")


# --------------------------------------------------------------------------------------- frames folders
def _touch(root, *rels):
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")  # discovery reads names only


def test_a_folder_of_frames_is_one_video_named_by_its_relative_path(tmp_path):
    root = tmp_path / "data"
    _touch(root, "a.mp4", "shots/s1/f_1.jpg", "shots/s1/f_2.jpg", "shots/s1/f_10.JPG",
           "shots/s1/deeper/x.mp4",  # below a frames folder: not searched
           "shots/s2/0001.png", "shots/s2/0002.png", "shots/s2/notes.txt",
           "stills/one.png",  # a single image is not a video
           "mixed/b.mp4", "mixed/cover.jpg", "mixed/thumb.png")  # videos and stray images: a directory of videos
    found = discover([str(root)])
    assert [v.video_id for v in found] == ["a.mp4", "mixed/b.mp4", "shots/s1", "shots/s2"]
    by_id = {v.video_id: v for v in found}
    assert by_id["shots/s1"].path == str(root / "shots" / "s1") and os.path.isdir(by_id["shots/s1"].path)
    # deterministic and reversible like file ids
    from featcomp.pipelines.inputs import id_to_name

    assert id_to_name("shots/s1") == "shots/s1" and discover([str(root)]) == found


def test_a_frames_folder_given_as_the_input_is_named_like_a_file(tmp_path):
    clip = tmp_path / "cam 1%41"
    _touch(clip, "a.png", "b.png", "sub/c.mp4")
    found = discover([str(clip)])
    assert found == [VideoInput("cam 1%2541", str(clip))]  # '%41' escaped as in file ids
    from featcomp.pipelines.inputs import id_to_name

    assert id_to_name(found[0].video_id) == "cam 1%41"


def test_frames_folder_rule_hidden_files_and_custom_extensions(tmp_path):
    from featcomp.pipelines.inputs import is_frames_folder

    assert is_frames_folder(["a.png", "b.webp"])
    assert not is_frames_folder(["a.png"])
    assert not is_frames_folder(["a.png", "b.png", "c.MOV"])
    assert not is_frames_folder(["a.png", ".b.png"])  # hidden names do not count
    assert is_frames_folder(["a.png", "b.png", ".c.mp4"])  # nor do hidden videos
    # extensions decide what a video is: with only .mkv videos, an .mp4 does not block the frames folder
    assert is_frames_folder(["a.png", "b.png", "c.mp4"], (".mkv",))
    root = tmp_path / "r"
    _touch(root, "v/x.mkv", "v/1.png", "v/2.png")
    assert [v.video_id for v in discover([str(root)])] == ["v/x.mkv"]
    assert [v.video_id for v in discover([str(root)], extensions=(".mp4",))] == ["v"]


def test_a_directory_without_videos_or_frames_folders_is_an_error(tmp_path):
    root = tmp_path / "r"
    _touch(root, "one.png", "sub/two.png", "notes.txt")
    with pytest.raises(PipelineError, match="no video files.*no frames folder"):
        discover([str(root)])
