"""``langneurons masks``: export / import the LAPE reference code's ``*.neuron.pth`` mask files."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from langneurons.cli._common import add_force_option, add_list_option

    parser = subparsers.add_parser("masks", help="convert neuron sets to / from the reference *.neuron.pth format")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="neuron set -> reference mask file")
    export.add_argument("neurons", help="neuron-set directory")
    export.add_argument("--out", required=True, help="mask file to write (e.g. llama-7b.neuron.pth)")
    add_force_option(export, "replace an existing mask file at --out")
    export.set_defaults(func=run_export)
    imp = actions.add_parser("import", help="reference mask file -> neuron set")
    imp.add_argument("masks", help="reference mask file (torch.save of List[lang][layer] -> LongTensor)")
    add_list_option(imp, "--langs", "languages of the masks, in order, e.g. --langs en zh", required=True,
                    metavar="LANG")
    imp.add_argument("--width", required=True, type=int, help="neurons per layer (the model's FFN width)")
    imp.add_argument("--site", default="ffn.act", help="neuron site the ids refer to")
    imp.add_argument("--out", required=True, help="neuron-set directory to write")
    add_force_option(imp)
    imp.set_defaults(func=run_import)


def run_export(args: argparse.Namespace) -> int:
    from langneurons.cli._common import prepare_outputs
    from langneurons.sets.artefacts import Target
    from langneurons.sets.neuronset import load_neurons, save_reference_masks

    prepare_outputs(args, [Target("--out", args.out, role="file")], {"NEURONS": args.neurons})
    neurons = load_neurons(args.neurons)
    save_reference_masks(neurons, args.out)
    print(f"wrote {args.out}: languages {', '.join(neurons.languages)} (in this order)")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from langneurons.cli._common import parse_langs, prepare_outputs
    from langneurons.sets.neuronset import load_reference_masks

    prepare_outputs(args, {"--out": args.out}, {"MASKS": args.masks})
    neurons = load_reference_masks(args.masks, parse_langs(args.langs) or [], args.width, site=args.site)
    neurons.save(args.out)
    print(f"wrote {args.out}: {neurons.sizes()}")
    return 0
