//! Tests of the atomic file write, the folder install and the safetensors writer, including the
//! failure paths: what must stay untouched and what must not be left behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::{
    write_atomic, write_json_atomic, write_new, AtomicFile, DirInstall, Dtype, Error, Existing, NewFile,
    SafetensorsConfig, SafetensorsWriter, Sharding, TensorSpec,
};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Every file under `dir` with its bytes, relative paths sorted.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for name in names(dir) {
        let p = dir.join(&name);
        if p.is_dir() {
            for (k, v) in snapshot(&p) {
                out.insert(format!("{name}/{k}"), v);
            }
        } else {
            out.insert(name, fs::read(p).unwrap());
        }
    }
    out
}

#[test]
fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("sub/out.json");
    write_atomic(&p, b"one").unwrap();
    write_atomic(&p, b"two").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"two");
    assert_eq!(names(&tmp.path().join("sub")), ["out.json"]);
    write_json_atomic(&p, &serde_json::json!({"a": 1})).unwrap();
    assert_eq!(fs::read_to_string(&p).unwrap(), "{\n  \"a\": 1\n}\n");
}

#[test]
fn an_abandoned_atomic_file_leaves_the_old_content_and_no_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("out.bin");
    write_atomic(&p, b"old").unwrap();
    let mut f = AtomicFile::create(&p).unwrap();
    f.write_all(b"half of the new").unwrap();
    assert_eq!(names(tmp.path()).len(), 2, "the temporary file sits beside the destination");
    drop(f); // what an error between create and commit does
    assert_eq!(fs::read(&p).unwrap(), b"old");
    assert_eq!(names(tmp.path()), ["out.bin"]);
}

#[test]
fn write_errors_name_the_path_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("file"), b"x").unwrap();
    // The parent "folder" is a file: creating the folder fails.
    let e = write_atomic(&tmp.path().join("file/out.json"), b"y").unwrap_err();
    assert!(matches!(e, Error::Io { op: "create folder", .. }), "{e:?}");
    assert!(e.to_string().contains("file"), "{e}");
    // The destination is a folder: the rename fails and the temporary file is removed.
    fs::create_dir(tmp.path().join("dir")).unwrap();
    fs::write(tmp.path().join("dir/inside"), b"z").unwrap();
    let e = write_atomic(&tmp.path().join("dir"), b"y").unwrap_err();
    assert_eq!(e.to_string(), format!("cannot rename into place {}", tmp.path().join("dir").display()));
    assert_eq!(names(tmp.path()), ["dir", "file"]);
    // write_new never overwrites.
    let e = write_new(&tmp.path().join("file"), b"w").unwrap_err();
    assert!(matches!(e, Error::Io { op: "create", .. }), "{e:?}");
    assert_eq!(fs::read(tmp.path().join("file")).unwrap(), b"x");
}

#[test]
fn a_new_file_streams_is_removed_when_dropped_unfinished_and_never_overwrites() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("stats.bin");
    // More than the 1 MiB buffer, in pieces: all of it arrives, in order.
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut f = NewFile::create(&path).unwrap();
    for piece in bytes.chunks(70_001) {
        f.write_all(piece).unwrap();
    }
    assert_eq!(f.path(), path);
    f.finish().unwrap();
    assert_eq!(fs::read(&path).unwrap(), bytes);

    // Something already there: refused, untouched.
    let e = NewFile::create(&path).unwrap_err();
    assert!(matches!(e, Error::Io { op: "create", .. }), "{e:?}");
    assert_eq!(fs::read(&path).unwrap(), bytes);

    // Dropped before `finish` (an encoder's error, a panic): nothing is left behind, even with
    // part of it already flushed to the file.
    let other = tmp.path().join("partial.bin");
    let mut f = NewFile::create(&other).unwrap();
    f.write_all(&bytes).unwrap();
    drop(f);
    assert_eq!(names(tmp.path()), ["stats.bin"]);
}

/// Builds a folder with two files through an install.
fn install(dest: &Path, existing: Existing, content: &[u8]) -> crate::Result<()> {
    let d = DirInstall::begin(dest, existing)?;
    write_atomic(&d.path().join("a.txt"), content)?;
    fs::create_dir(d.path().join("sub")).unwrap();
    write_new(&d.path().join("sub/b.txt"), content)?;
    d.commit()
}

#[test]
fn a_folder_install_creates_refuses_and_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("parent/model");
    install(&dest, Existing::Refuse, b"v1").unwrap();
    assert_eq!(
        snapshot(&dest),
        BTreeMap::from([("a.txt".into(), b"v1".to_vec()), ("sub/b.txt".into(), b"v1".to_vec())])
    );

    // Non-empty and not asked to replace: refused before anything is made, nothing changes.
    let before = snapshot(tmp.path());
    let e = install(&dest, Existing::Refuse, b"v2").unwrap_err();
    assert!(matches!(e, Error::Occupied { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("{} is a folder that is not empty", dest.display()));
    assert_eq!(snapshot(tmp.path()), before);

    // Replace: the new folder, and neither the old one nor a temporary folder left beside it.
    install(&dest, Existing::Replace, b"v3").unwrap();
    assert_eq!(fs::read(dest.join("sub/b.txt")).unwrap(), b"v3");
    assert_eq!(names(&tmp.path().join("parent")), ["model"]);

    // An empty folder is not "occupied".
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    install(&empty, Existing::Refuse, b"v4").unwrap();
    assert_eq!(fs::read(empty.join("a.txt")).unwrap(), b"v4");

    // A file in the way is refused too, and replaced under Replace.
    let file = tmp.path().join("file");
    fs::write(&file, b"f").unwrap();
    let e = install(&file, Existing::Refuse, b"v5").unwrap_err();
    assert_eq!(e.to_string(), format!("{} exists and is not a folder", file.display()));
    install(&file, Existing::Replace, b"v5").unwrap();
    assert_eq!(fs::read(file.join("a.txt")).unwrap(), b"v5");
}

#[test]
fn a_failed_install_leaves_the_destination_byte_identical_and_no_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("model");
    install(&dest, Existing::Refuse, b"old").unwrap();
    let before = snapshot(tmp.path());
    let d = DirInstall::begin(&dest, Existing::Replace).unwrap();
    write_atomic(&d.path().join("a.txt"), b"new").unwrap();
    assert_eq!(names(tmp.path()).len(), 2, "the temporary folder sits beside the destination");
    drop(d); // what an error before the commit does
    assert_eq!(snapshot(tmp.path()), before);
}

#[cfg(unix)]
#[test]
fn replacing_a_symbolic_link_removes_the_link_not_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    install(&target, Existing::Refuse, b"keep").unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = install(&link, Existing::Refuse, b"new").unwrap_err();
    assert_eq!(e.to_string(), format!("{} is a symbolic link", link.display()));
    install(&link, Existing::Replace, b"new").unwrap();
    assert!(!fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(link.join("a.txt")).unwrap(), b"new");
    assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"keep");
}

fn config(sharding: Sharding) -> SafetensorsConfig {
    SafetensorsConfig { sharding, metadata: BTreeMap::new() }
}

/// Tensors of every supported dtype, with their bytes: F32 first, then BF16, then F16, each by
/// name, which is the order `safetensors::serialize` sorts them into.
fn sample() -> Vec<(TensorSpec, Vec<u8>)> {
    let f32s = |n: usize, k: f32| -> Vec<u8> { (0..n).flat_map(|i| (i as f32 * k - 1.5).to_le_bytes()).collect() };
    let halves = |n: usize, k: u16| -> Vec<u8> { (0..n as u16).flat_map(|i| (0x3c00 + i * k).to_le_bytes()).collect() };
    vec![
        (TensorSpec::new("a.weight", Dtype::F32, &[3, 4]), f32s(12, 0.25)),
        (TensorSpec::new("b.bias", Dtype::F32, &[5]), f32s(5, -2.0)),
        (TensorSpec::new("z.scalar", Dtype::F32, &[]), f32s(1, 7.0)),
        (TensorSpec::new("c.bf16", Dtype::BF16, &[2, 3]), halves(6, 3)),
        (TensorSpec::new("d.f16", Dtype::F16, &[7]), halves(7, 5)),
    ]
}

fn write_sample(dir: &Path, config: &SafetensorsConfig) -> Vec<std::path::PathBuf> {
    let tensors = sample();
    let mut w = SafetensorsWriter::create(dir, tensors.iter().map(|(s, _)| s.clone()).collect(), config).unwrap();
    for (s, bytes) in &tensors {
        w.write_tensor(&s.name, bytes).unwrap();
    }
    w.finish().unwrap()
}

fn st_dtype(d: Dtype) -> safetensors::Dtype {
    match d {
        Dtype::F32 => safetensors::Dtype::F32,
        Dtype::F16 => safetensors::Dtype::F16,
        Dtype::BF16 => safetensors::Dtype::BF16,
    }
}

/// Identical, byte for byte: for the same tensors in `safetensors::serialize`'s order (dtype
/// alignment descending, then name) and the same metadata, our header is its header (same key order,
/// same compact JSON, same space padding to 8 bytes) and the data follow in the same order.
#[test]
fn a_single_file_is_byte_identical_to_the_safetensors_crate_and_reads_back() {
    for metadata in [BTreeMap::new(), BTreeMap::from([("format".to_owned(), "pt".to_owned())])] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = SafetensorsConfig { sharding: Sharding::Single, metadata: metadata.clone() };
        let paths = write_sample(tmp.path(), &cfg);
        assert_eq!(paths, [tmp.path().join("model.safetensors")]);
        let ours = fs::read(&paths[0]).unwrap();

        let tensors = sample();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(s, b)| {
                (s.name.clone(), safetensors::tensor::TensorView::new(st_dtype(s.dtype), s.shape.clone(), b).unwrap())
            })
            .collect();
        let info = (!metadata.is_empty()).then(|| metadata.clone().into_iter().collect());
        let theirs = safetensors::serialize(views, info).unwrap();
        assert_eq!(ours, theirs, "metadata {metadata:?}");

        let st = safetensors::SafeTensors::deserialize(&ours).unwrap();
        assert_eq!(st.len(), tensors.len());
        for (s, bytes) in &tensors {
            let t = st.tensor(&s.name).unwrap();
            assert_eq!((t.dtype(), t.shape(), t.data()), (st_dtype(s.dtype), s.shape.as_slice(), bytes.as_slice()));
        }
        assert_eq!(names(tmp.path()), ["model.safetensors"]);
    }
}

#[test]
fn shards_hold_at_most_the_limit_and_the_index_maps_every_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    // Sizes in order: 48, 20, 4, 12, 14 bytes. With 40 bytes a shard: [48] alone (larger than the
    // limit), [20, 4, 12], [14].
    let paths = write_sample(tmp.path(), &config(Sharding::MaxBytes(40)));
    let shard = |i: usize| format!("model-{i:05}-of-00003.safetensors");
    let expected: Vec<_> = [shard(1), shard(2), shard(3), "model.safetensors.index.json".to_owned()]
        .iter()
        .map(|n| tmp.path().join(n))
        .collect();
    assert_eq!(paths, expected);
    let mut all = names(tmp.path());
    all.sort();
    assert_eq!(all, [shard(1), shard(2), shard(3), "model.safetensors.index.json".to_owned()]);

    let index: serde_json::Value = serde_json::from_slice(&fs::read(&paths[3]).unwrap()).unwrap();
    assert_eq!(index["metadata"]["total_size"], 48 + 20 + 4 + 12 + 14);
    let tensors = sample();
    let mut found = 0;
    for (i, members) in [vec![0], vec![1, 2, 3], vec![4]].into_iter().enumerate() {
        let bytes = fs::read(&paths[i]).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), members.len());
        for m in members {
            let (s, data) = &tensors[m];
            assert_eq!(st.tensor(&s.name).unwrap().data(), data.as_slice());
            assert_eq!(index["weight_map"][&s.name], shard(i + 1));
            found += 1;
        }
    }
    assert_eq!(found, tensors.len());
    assert_eq!(index["weight_map"].as_object().unwrap().len(), tensors.len());

    // A limit that everything fits under: one plain model.safetensors, no index.
    let one = tempfile::tempdir().unwrap();
    assert_eq!(write_sample(one.path(), &config(Sharding::MaxBytes(1 << 20))), [one.path().join("model.safetensors")]);
    // Shards beside an existing model.safetensors would be shadowed by it: refused.
    let e = SafetensorsWriter::create(
        one.path(),
        sample().into_iter().map(|t| t.0).collect(),
        &config(Sharding::MaxBytes(40)),
    )
    .unwrap_err();
    assert!(e.to_string().contains("holds a model.safetensors"), "{e}");
}

#[test]
fn misuse_is_an_error_naming_the_tensor_and_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let specs = || sample().into_iter().map(|t| t.0).collect::<Vec<_>>();
    let create = |sharding| SafetensorsWriter::create(tmp.path(), specs(), &config(sharding)).unwrap();
    let msg = |e: Error| e.to_string();

    let mut w = create(Sharding::Single);
    assert!(msg(w.write_tensor("b.bias", &[0; 20]).unwrap_err()).contains("`a.weight` comes next"));
    let e = msg(w.write_tensor("a.weight", &[0; 44]).unwrap_err());
    assert!(e.contains("tensor `a.weight` (F32 [3, 4]) needs 48 bytes, got 44"), "{e}");
    w.write_f32("a.weight", &[0.5; 12]).unwrap();
    w.write_f32("b.bias", &[1.0; 5]).unwrap();
    let e = msg(w.finish().unwrap_err());
    assert!(e.contains("only 2 of 5 tensors were written (next: `z.scalar`)"), "{e}");
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));

    // Dropped halfway through a sharded write: the finished shard is not left behind either.
    let mut w = create(Sharding::MaxBytes(40));
    let tensors = sample();
    for (s, b) in &tensors[..3] {
        w.write_tensor(&s.name, b).unwrap();
    }
    drop(w);
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));

    let mut w = create(Sharding::Single);
    for (s, b) in &tensors {
        w.write_tensor(&s.name, b).unwrap();
    }
    assert!(msg(w.write_tensor("extra", &[]).unwrap_err()).contains("`extra` was not declared"));
    drop(w);
    let e = msg(create(Sharding::Single).write_f32("a.weight", &[0.0; 11]).unwrap_err());
    assert!(e.contains("needs 48 bytes, got 44"), "{e}");

    let mut dup = specs();
    dup.push(dup[0].clone());
    let e = msg(SafetensorsWriter::create(tmp.path(), dup, &config(Sharding::Single)).unwrap_err());
    assert!(e.contains("tensor `a.weight` is declared twice"), "{e}");
    let bad = vec![TensorSpec::new("__metadata__", Dtype::F32, &[1])];
    assert!(SafetensorsWriter::create(tmp.path(), bad, &config(Sharding::Single)).is_err());
    let huge = vec![TensorSpec::new("h", Dtype::F32, &[usize::MAX, 2])];
    assert!(
        msg(SafetensorsWriter::create(tmp.path(), huge, &config(Sharding::Single)).unwrap_err()).contains("too large")
    );
    assert!(SafetensorsWriter::create(tmp.path(), specs(), &config(Sharding::MaxBytes(0))).is_err());
    let mut w =
        SafetensorsWriter::create(tmp.path(), vec![TensorSpec::new("h", Dtype::BF16, &[2])], &config(Sharding::Single))
            .unwrap();
    assert!(msg(w.write_f32("h", &[1.0]).unwrap_err()).contains("declared BF16, not F32"));
    drop(w);
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

#[test]
fn no_tensors_make_a_valid_empty_file() {
    let tmp = tempfile::tempdir().unwrap();
    let w = SafetensorsWriter::create(tmp.path(), vec![], &config(Sharding::Single)).unwrap();
    let paths = w.finish().unwrap();
    let bytes = fs::read(&paths[0]).unwrap();
    assert_eq!(
        bytes,
        safetensors::serialize(Vec::<(String, safetensors::tensor::TensorView<'_>)>::new(), None).unwrap()
    );
    assert_eq!(safetensors::SafeTensors::deserialize(&bytes).unwrap().len(), 0);
}
