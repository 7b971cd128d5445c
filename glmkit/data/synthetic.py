"""Synthetic genomes whose genomic grammar is planted and known: the corpus that shows the gLM learns.

No trained ESM2 can be downloaded where glmkit is developed, and a gLM trained
on random-weight embeddings learns nothing worth measuring. Here the answer is
known by construction (everything drawn from one seed):

- **Families.** F gene families, each a centroid in `dim` dimensions (standard
  normal); a protein's embedding is its family's centroid plus noise
  (`noise` x standard normal), so homologs are close, as under a trained ESM2.
  Each family also has a template protein sequence; members carry ~15 %
  substitutions, so MMseqs2 clusters them as homologs.
- **Operons.** T templates, ordered runs of 2-6 families on one strand, recur
  across genomes (a genome draws each template with probability
  `operon_presence`), with gene loss (each member dropped with probability
  `loss`) and insertion (a solitary gene put inside with probability
  `insertion`). Gaps inside operons are short (normal, mean 15 bp, sd 40).
- **Interacting partners.** P systems of two families A and B (a kinase and
  its regulator), each with S subfamilies: subfamily s of A pairs with
  subfamily s of B only. A genome carries `paralog_pairs` pairs of one
  system, of distinct subfamilies, each pair adjacent on one strand (a
  2-gene operon). Telling which B goes with which A needs the pairing learnt.
- **Solitary genes** of the remaining families fill the genome, on random
  strands with gaps drawn from a wide distribution (normal, mean 120 bp, sd
  110), which overlaps the operon gaps: distance alone separates operon pairs
  only partly.

Two options plant what gLM2 (which reads sequences, not embeddings) can learn;
both are off by default, and turning them on leaves the genes' layout and
embeddings as they were except for the templates' residues:

- ``protein_grammar="markov"``: family templates are drawn from a first-order
  chain over the 20 amino acids in which each residue has three preferred
  successors (probabilities 0.5, 0.2 and 0.1, the rest 0.01 each), so a
  masked residue is predictable from its neighbours; members still carry
  ~15 % uniform substitutions.
- ``intergenic=True``: the gaps between genes become IGS elements (bases
  from a first-order chain in which each base is followed by its preferred
  successor with probability 0.55, the others 0.15 each; drawn from a stream
  of their own) carrying the motifs of a bacterial
  upstream region on the strand of the gene they precede: a Shine-Dalgarno
  box (AGGAGG) 7 bp before every gene's start, and before the first gene of
  each transcription unit a sigma-70 promoter (TTGACA, 17 bp, TATAAT) 8 bp
  before that; as much of them as the gap holds (a short gap keeps the bases
  nearest the gene; two divergent genes share their gap half and half).

`write_corpus` writes the genomes as element stores (one contig per genome;
train and held-out genomes in two stores) and their embeddings as one
embedding store, through glmkit's own writers, plus the truth: operon labels
of every neighbouring pair (`train.pairs.tsv`, `test.pairs.tsv`: gene_a, gene_b, label) and the
partner of every held-out A gene (`partners/GENOME.tsv`: query, partner, with
the genome's A and B proteins as FASTA for `paralog-match`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from glmkit.genome.annotation import reverse_complement

AMINO = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", np.uint8)


@dataclass
class SyntheticSpec:
    train_genomes: int = 80
    test_genomes: int = 12
    genes_per_genome: int = 300
    families: int = 300            # solitary + operon families (partner families come on top)
    operon_templates: int = 40
    operon_presence: float = 0.6
    loss: float = 0.08
    insertion: float = 0.04
    partner_systems: int = 2
    subfamilies: int = 12
    paralog_pairs: int = 8         # per genome
    dim: int = 1280
    noise: float = 0.5
    seed: int = 0
    protein_grammar: str = "uniform"   # or "markov": templates from a residue chain (see above)
    intergenic: bool = False           # IGS elements with planted promoter and RBS motifs (see above)


RBS, PROMOTER_35, PROMOTER_10 = b"AGGAGG", b"TTGACA", b"TATAAT"


@dataclass
class Gene:
    family: int
    strand: int
    length: int        # bp
    operon: int        # operon instance number (-1: none); neighbours in one instance are same-operon pairs
    role: str = ""     # "A" / "B" of a partner pair
    pair: int = -1     # the partner pair within the genome


class _Planter:
    def __init__(self, spec: SyntheticSpec):
        self.spec = s = spec
        self.rng = np.random.default_rng(s.seed)
        n_partner = 2 * s.partner_systems * s.subfamilies
        self.n_families = s.families + n_partner
        self.centroids = self.rng.standard_normal((self.n_families, s.dim)).astype(np.float32)
        lengths = self.rng.integers(80, 400, self.n_families)
        if s.protein_grammar == "markov":
            self.transitions = np.full((20, 20), 0.01)   # each residue's three preferred successors
            for i in range(20):
                self.transitions[i, self.rng.choice(20, 3, replace=False)] += (0.49, 0.19, 0.09)
            self.templates = [self._markov_chain(int(n)) for n in lengths]
        elif s.protein_grammar == "uniform":
            self.templates = [AMINO[self.rng.integers(0, 20, n)] for n in lengths]
        else:
            raise ValueError(f"protein_grammar {s.protein_grammar!r}: expected uniform or markov")
        self.bases = np.random.default_rng([s.seed, 1])   # intergenic DNA: its own stream
        self.base_successor = self.bases.permutation(4)   # each base's preferred successor (p 0.55, others 0.15)
        operon_pool = self.rng.permutation(s.families)
        self.operons = []
        k = 0
        for _ in range(s.operon_templates):
            size = int(self.rng.integers(2, 7))
            self.operons.append(operon_pool[k:k + size].tolist())
            k += size
        self.solitary = operon_pool[k:] if k < s.families else operon_pool
        # partner families: system p, subfamily j -> (A family, B family)
        base = s.families
        self.partner = [[(base + 2 * (p * s.subfamilies + j), base + 2 * (p * s.subfamilies + j) + 1)
                         for j in range(s.subfamilies)] for p in range(s.partner_systems)]

    def _markov_chain(self, n: int) -> np.ndarray:
        """n residues of the chain (one transition table for every family)."""
        cumulative = self.transitions.cumsum(1)
        chain = np.empty(n, np.int64)
        chain[0] = self.rng.integers(0, 20)
        for k, draw in enumerate(self.rng.random(n - 1), 1):
            row = cumulative[chain[k - 1]]
            chain[k] = min(19, int(np.searchsorted(row, draw * row[-1], side="right")))
        return AMINO[chain]

    def intergenic(self, length: int, left: Gene, right: Gene, right_starts_unit: bool,
                   left_starts_unit: bool) -> bytes:
        """The bases between two genes (forward strand): random, with the upstream motifs of the gene each side
        that points away from the gap (right on +, left on -)."""
        draws = self.bases.random(length)
        chain = np.empty(length, np.int64)
        chain[0] = int(draws[0] * 4)
        for k in range(1, length):   # the preferred successor below 0.55, else one of the other three
            other = min(2, int((draws[k] - 0.55) / 0.15)) if draws[k] >= 0.55 else -1
            preferred = self.base_successor[chain[k - 1]]
            chain[k] = preferred if other < 0 else [b for b in range(4) if b != preferred][other]
        seq = bytearray(b"ACGT"[i] for i in chain)

        def upstream(starts_unit: bool) -> bytes:   # 5' -> 3' on the gene's strand, ending at its start codon
            return (PROMOTER_35 + b"N" * 17 + PROMOTER_10 + b"N" * 8 if starts_unit else b"") + RBS + b"N" * 7

        both = right.strand > 0 and left.strand < 0   # divergent genes: each keeps its motifs in its half
        if right.strand > 0:
            room = length - length // 2 if both else length
            motif = upstream(right_starts_unit)[-room:]
            for k, base in enumerate(motif, length - len(motif)):
                if base != ord("N"):
                    seq[k] = base
        if left.strand < 0:
            room = length // 2 if both else length
            motif = reverse_complement(upstream(left_starts_unit))[:room]
            for k, base in enumerate(motif):
                if base != ord("N"):
                    seq[k] = base
        return bytes(seq)

    def _solitary(self) -> Gene:
        r = self.rng
        return Gene(int(r.choice(self.solitary)), int(r.choice([-1, 1])), self._length(), -1)  # no operon

    def gap(self, inside: bool) -> int:
        """bp from the previous gene's end: short inside an operon, wide between transcription units."""
        r = self.rng
        return int(max(-30, r.normal(15, 40) if inside else r.normal(120, 110)))

    def _length(self) -> int:
        return int(self.rng.integers(100, 500)) * 3

    def genome(self, operon_counter: list[int]) -> list[Gene]:
        s, r = self.spec, self.rng
        units: list[list[Gene]] = []
        for template in self.operons:
            if r.random() < s.operon_presence:
                instance = operon_counter[0]
                operon_counter[0] += 1
                strand = int(r.choice([-1, 1]))
                genes = []
                for family in template:
                    if r.random() < s.loss:
                        continue
                    if genes and r.random() < s.insertion:
                        genes.append(self._solitary())
                    genes.append(Gene(int(family), strand, self._length(), instance))
                if genes:
                    units.append(genes)
        system = int(r.integers(0, s.partner_systems))
        for k, j in enumerate(r.choice(s.subfamilies, size=min(s.paralog_pairs, s.subfamilies), replace=False)):
            instance = operon_counter[0]
            operon_counter[0] += 1
            strand = int(r.choice([-1, 1]))
            a, b = self.partner[system][int(j)]
            first, second = (a, b) if r.random() < 0.5 else (b, a)
            units.append([Gene(first, strand, self._length(), instance, "AB"[first != a], k),
                          Gene(second, strand, self._length(), instance, "AB"[second != a], k)])
        n_planted = sum(len(u) for u in units)
        units += [[self._solitary()] for _ in range(max(0, s.genes_per_genome - n_planted))]
        order = r.permutation(len(units))
        return [g for i in order for g in (units[i] if units[i][0].strand > 0 else units[i][::-1])]

    def protein(self, family: int) -> bytes:
        seq = self.templates[family].copy()
        change = self.rng.random(len(seq)) < 0.15
        seq[change] = AMINO[self.rng.integers(0, 20, int(change.sum()))]
        return bytes(b"M") + seq.tobytes()

    def embedding(self, family: int) -> np.ndarray:
        return self.centroids[family] + self.spec.noise * self.rng.standard_normal(self.spec.dim).astype(np.float32)


def write_corpus(out: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> dict:
    """Write train.zarr, test.zarr, embeddings.zarr, train/test.pairs.tsv, partners/ into ``out``; returns a
    summary."""
    from glmkit.io.elements import (CDS, CONTIG_COLUMNS, ELEMENT_COLUMNS, IGS, ElementBatch, ElementStoreWriter,
                                    column_array)
    from glmkit.io.embeddings import PlannedRows, ResumableEmbeddingWriter, sequence_hash

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "partners").mkdir(exist_ok=True)
    planter = _Planter(spec)
    hashes, vectors = [], []
    counter = [0]
    summary = {"spec": asdict(spec), "genes": 0, "same_operon_pairs": 0, "pairs": 0}
    for split, n_genomes in (("train", spec.train_genomes), ("test", spec.test_genomes)):
        pair_rows = []
        writer = ElementStoreWriter(out / f"{split}.zarr", {"synthetic": asdict(spec)}, [])
        for g in range(n_genomes):
            name = f"{split}{g:03d}"
            genes = planter.genome(counter)
            cols = {k: [] for k in ELEMENT_COLUMNS}
            pos = 0
            a_of_pair, b_of_pair = {}, {}
            n_elements = 0

            def starts_unit(i: int) -> bool:   # first gene of its transcription unit, in its own orientation
                g, j = genes[i], i - 1 if genes[i].strand > 0 else i + 1
                return g.operon < 0 or not 0 <= j < len(genes) or genes[j].operon != g.operon

            for i, gene in enumerate(genes):
                inside = i > 0 and gene.operon >= 0 and gene.operon == genes[i - 1].operon
                start = max(1, pos + planter.gap(inside) + 1) if i else 1
                end = start + gene.length - 1
                if spec.intergenic and start - pos > 1 and i:
                    nt = planter.intergenic(start - pos - 1, genes[i - 1], gene, starts_unit(i), starts_unit(i - 1))
                    row = {"id": f"{name}_igs{i}", "type": IGS, "strand": 0, "start": pos + 1, "end": start - 1,
                           "partial_left": False, "partial_right": False, "translation_table": 11,
                           "start_type": "", "rbs_motif": "", "rbs_spacer": "", "nt": nt, "aa": b""}
                    for k in ELEMENT_COLUMNS:
                        cols[k].append(row.get(k, 0.0))
                    n_elements += 1
                pos = end
                aa = planter.protein(gene.family)
                h = sequence_hash(aa)
                hashes.append(h)
                vectors.append(planter.embedding(gene.family))
                gene_id = f"{name}_{i + 1}"
                row = {"id": gene_id, "type": CDS, "strand": gene.strand, "start": start, "end": end,
                       "partial_left": False, "partial_right": False, "translation_table": 11, "start_type": "ATG",
                       "rbs_motif": "None", "rbs_spacer": "None", "nt": b"A" * gene.length, "aa": aa}
                for k in ELEMENT_COLUMNS:
                    cols[k].append(row.get(k, 0.0))
                n_elements += 1
                if gene.role == "A":
                    a_of_pair[gene.pair] = (gene_id, aa)
                elif gene.role == "B":
                    b_of_pair[gene.pair] = (gene_id, aa)
                if i:
                    same = gene.operon >= 0 and gene.operon == genes[i - 1].operon
                    pair_rows.append((f"{name}_{i}", gene_id, int(same)))
                    summary["same_operon_pairs"] += int(same)
                    summary["pairs"] += 1
            contig = {"name": name, "length": pos + 100, "source": name, "source_start": 1, "source_end": pos + 100,
                      "model": "synthetic", "translation_table": 11}
            writer.write(ElementBatch({k: column_array([v], CONTIG_COLUMNS[k]) for k, v in contig.items()},
                                      {k: column_array(v, ELEMENT_COLUMNS[k]) for k, v in cols.items()},
                                      np.array([n_elements], np.int64)))
            summary["genes"] += len(genes)
            if split == "test":
                q = sorted(a_of_pair)
                (out / "partners" / f"{name}.A.faa").write_text(
                    "".join(f">{a_of_pair[k][0]}\n{a_of_pair[k][1].decode()}\n" for k in q))
                (out / "partners" / f"{name}.B.faa").write_text(
                    "".join(f">{b_of_pair[k][0]}\n{b_of_pair[k][1].decode()}\n" for k in q))
                (out / "partners" / f"{name}.tsv").write_text(
                    "query\tpartner\n" + "".join(f"{a_of_pair[k][0]}\t{b_of_pair[k][0]}\n" for k in q))
        writer.close()
        (out / f"{split}.pairs.tsv").write_text("gene_a\tgene_b\tlabel\n"
                                                + "".join(f"{a}\t{b}\t{y}\n" for a, b, y in pair_rows))
    hashes = np.array(hashes, dtype="S64")
    _, first = np.unique(hashes, return_index=True)  # a repeated sequence (unlikely) keeps its first embedding
    first.sort()
    model = {"name": "synthetic-families", "sha256": hashlib.sha256(repr(asdict(spec)).encode()).hexdigest(),
             "embed_dim": spec.dim, "layer": 1, "max_residues": None, "long": None, "pooling": "mean",
             "source": "glmkit.synthetic"}   # recorded in stores: the name it was written under
    planned = PlannedRows.in_memory(hashes[first], [100] * len(first))
    store = ResumableEmbeddingWriter(out / "embeddings.zarr", {"synthetic": asdict(spec)}, [], planned, spec.dim,
                                     "float16", model, 4096)
    vectors = np.stack(vectors)[first]
    for k in store.pending():
        rows = store.rows(k)
        store.write_chunk(k, vectors[rows.start:rows.stop].astype(np.float16))
    store.publish([])
    summary["proteins"] = int(len(first))
    return summary


# -- planted near-duplicates: the corpus `dedup semantic` is tested and benchmarked on ----------------------------

@dataclass
class DuplicateSpec:
    """Embeddings around ``centres`` centres whose sizes follow a Zipf law (skewed, like real clusters), with a
    fraction of near-duplicates (a copy of an original item of the same chunk plus ``copy_noise`` noise: cosine
    similarity above 0.999) and of exact copies. Drawn chunk by chunk from (seed, chunk): any size is cheap."""

    n: int = 10_000
    dim: int = 64
    centres: int = 50
    zipf: float = 1.1
    spread: float = 0.6         # within-centre noise (relative to the centre's norm 1)
    near_duplicates: float = 0.2
    exact_duplicates: float = 0.05
    copy_noise: float = 0.01
    chunk_rows: int = 4096
    seed: int = 0


def duplicate_chunks(spec: DuplicateSpec):
    """(hashes, lengths, float16 vectors) chunk by chunk: the input of io.embeddings.write_embedding_store."""
    import numpy as np

    rng = np.random.default_rng([spec.seed, 0])
    centres = rng.normal(size=(spec.centres, spec.dim)) / np.sqrt(spec.dim)
    weights = 1.0 / np.arange(1, spec.centres + 1) ** spec.zipf
    weights /= weights.sum()
    for k, lo in enumerate(range(0, spec.n, spec.chunk_rows)):
        m = min(spec.chunk_rows, spec.n - lo)
        rng = np.random.default_rng([spec.seed, 1, k])
        centre = rng.choice(spec.centres, size=m, p=weights)
        x = centres[centre] + spec.spread * rng.normal(size=(m, spec.dim)) / np.sqrt(spec.dim)
        kind = rng.random(m)
        near = np.flatnonzero(kind < spec.near_duplicates)
        exact = np.flatnonzero((kind >= spec.near_duplicates) & (kind < spec.near_duplicates + spec.exact_duplicates))
        originals = np.setdiff1d(np.arange(m), np.concatenate([near, exact])) if len(near) + len(exact) < m else [0]
        copy_of = rng.choice(originals, size=len(near) + len(exact))   # an original item of the same chunk
        x[near] = x[copy_of[:len(near)]] + spec.copy_noise * rng.normal(size=(len(near), spec.dim)) / np.sqrt(spec.dim)
        x[exact] = x[copy_of[len(near):]]
        hashes = [hashlib.sha256(f"item{lo + i}".encode()).hexdigest() for i in range(m)]
        yield hashes, np.full(m, 100, dtype=np.int32), x.astype(np.float16)


def write_duplicates(path: str | Path, spec: DuplicateSpec = DuplicateSpec()) -> Path:
    from glmkit.io.embeddings import write_embedding_store

    model = {"name": "synthetic", "embed_dim": spec.dim, "layer": 0, "source": "glmkit.synthetic.DuplicateSpec",
             "spec": asdict(spec)}
    write_embedding_store(path, spec.n, spec.dim, duplicate_chunks(spec), model, chunk_rows=spec.chunk_rows)
    return Path(path)
