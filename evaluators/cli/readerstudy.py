"""``reader-study create|status|results|list``: blinded reader studies (:mod:`evaluators.readerstudy`)."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .args import add_options


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("reader-study", help="blinded reader study: create, follow, compute results",
                              description="A blinded reader study: can readers tell real from synthetic images?")
    sub = p.add_subparsers(dest="reader_command", metavar="ACTION")
    c = sub.add_parser("create", help="draw a balanced blinded sample and print the reader codes")
    c.set_defaults(func=_create)
    add_options(c, _create_options)
    s = sub.add_parser("status", help="a study's settings and each reader's progress")
    s.add_argument("study_id")
    s.set_defaults(func=_status)
    r = sub.add_parser("results", help="compute results; --out writes results.json and answers.csv")
    r.add_argument("study_id")
    r.add_argument("--out", default=None, help="folder for results.json and answers.csv")
    r.add_argument("--save", action="store_true", help="also save rows of kind reader-study to the results store")
    r.set_defaults(func=_results)
    ls = sub.add_parser("list", help="list the studies")
    ls.set_defaults(func=_list)


def _create_options(c: argparse.ArgumentParser) -> None:
    from ..readerstudy.study import QUESTIONS

    c.add_argument("--reference", required=True, help="real images: folder, CSV, PATH@SPLIT or 'demo'")
    c.add_argument("--synthetic", required=True, nargs="+", help="one or more synthetic sets")
    c.add_argument("--models", nargs="+", default=None, help="a model name per synthetic set (for the leaderboard)")
    c.add_argument("--n-images", type=int, default=40, help="images in the study, half real, half synthetic")
    c.add_argument("--readers", default="2", help="a number of readers, or comma-separated reader names")
    c.add_argument("--mix", default=None, help="pathology mix per side, e.g. 'Cardiomegaly=0.25,Edema=0.25'")
    c.add_argument("--questions", default=",".join(QUESTIONS),
                   help="comma-separated: real_synthetic, findings, quality, comment")
    c.add_argument("--size", type=int, default=None, help="served size in px (default: largest native side)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--name", default=None)


def _create(args) -> int:
    from ..readerstudy.study import create_study

    readers = args.readers.strip()
    readers = int(readers) if readers.isdigit() else [r.strip() for r in readers.split(",") if r.strip()]
    if isinstance(readers, int) and readers < 1:
        raise InputError("--readers must be at least 1.")
    study = create_study(args.reference, args.synthetic, n_images=args.n_images, readers=readers, mix=args.mix,
                         questions=tuple(q.strip() for q in args.questions.split(",") if q.strip()),
                         size=args.size, seed=args.seed, name=args.name, models=args.models)
    print(f"study {study['study_id']} ({study['name']}): {study['n_images']} images at {study['size']} px")
    for note in study["notes"]:
        print(f"note: {note}")
    print("reader codes (give each reader only their own):")
    for name, code in study["readers"].items():
        print(f"  {name}: {code}")
    return 0


def _status(args) -> int:
    from ..readerstudy.study import study_info

    info = study_info(args.study_id)
    print(f"study {info['study_id']} ({info['name']}), created {info['created']}: {info['n_images']} images")
    for name, done in info["progress"].items():
        print(f"  {name}: {done}/{info['n_images']} answered")
    for note in info["notes"]:
        print(f"note: {note}")
    return 0


def _fmt(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)


def _results(args) -> int:
    from ..readerstudy.export import export, save_to_store, study_results

    res = study_results(args.study_id)
    print(f"study {args.study_id}: {res['n_calls']} real/synthetic calls by {len(res['readers'])} reader(s); "
          f"intervals: {res['ci_method']}")
    for who, a in [*res["per_reader"].items(), ("pooled", res["pooled"])]:
        print(f"  {who}: accuracy {_fmt(a['accuracy'])} [{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}] "
              f"({a['correct']}/{a['n']}), p vs 50% {_fmt(a['p_value_vs_50'], '.3g')}, AUC {_fmt(a['auc'])}")
    for pair, k in res["cohen_kappa"].items():
        print(f"  Cohen's kappa {pair}: {_fmt(k['kappa'])} (n={k['n']})")
    fk = res["fleiss_kappa"]
    if fk["raters"] > 2:
        print(f"  Fleiss' kappa ({fk['raters']} readers): {_fmt(fk['kappa'])} (n={fk['n']})")
    q = res["quality"]["pooled"]
    print(f"  quality: real {_fmt(q['real']['mean'], '.2f')} (n={q['real']['n']}), "
          f"synthetic {_fmt(q['synthetic']['mean'], '.2f')} (n={q['synthetic']['n']})")
    for note in res["notes"]:
        print(f"note: {note}")
    if args.out:
        paths = export(args.study_id, args.out)
        print(f"wrote {paths['json']}, {paths['csv']} and {paths['roc_csv']}")
    if args.save:
        ids = save_to_store(args.study_id)
        print(f"saved results-store run(s) {', '.join(map(str, ids))} (kind reader-study)")
    return 0


def _list(args) -> int:
    from ..readerstudy.study import list_studies

    for s in list_studies():
        print(f"{s['id']}  {s['created']}  {s['name']}")
    return 0
