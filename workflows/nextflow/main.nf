#!/usr/bin/env nextflow
// glmkit as a Nextflow (DSL2) workflow: the same stages and fan-out as workflows/snakemake/Snakefile.
//
//   nextflow run workflows/nextflow/main.nf --genomes 'assemblies/*.fna.gz' --plm esm2_t33_650M_UR50D -profile docker
//
// Per-process options go in task.ext.args (see nextflow.config); --threads follows task.cpus.
nextflow.enable.dsl = 2

include { GLMKIT_CALL }          from './modules/call/main'
include { GLMKIT_FILTER }        from './modules/filter/main'
include { GLMKIT_EMBED }         from './modules/embed/main'
include { GLMKIT_EMBED_MERGE }   from './modules/embed_merge/main'
include { GLMKIT_PRETRAIN }      from './modules/pretrain/main'
include { GLMKIT_CONTEXTUALIZE } from './modules/contextualize/main'
include { GLMKIT_DEDUP_FIT }     from './modules/dedup_fit/main'
include { GLMKIT_DEDUP_ASSIGN }  from './modules/dedup_assign/main'
include { GLMKIT_DEDUP_PRUNE }   from './modules/dedup_prune/main'
include { GLMKIT_DEDUP_MERGE }   from './modules/dedup_merge/main'

params.genomes = null
params.plm = 'esm2_t33_650M_UR50D'
params.embed_shards = 4
params.dedup_assign_shards = 4
params.dedup_prune_shards = 2
params.glmkit_container = null

workflow {
    if (!params.genomes) { error "give --genomes 'path/*.fna.gz'" }
    genomes = Channel.fromPath(params.genomes, checkIfExists: true).collect().map { files -> [[id: 'corpus'], files] }

    GLMKIT_CALL(genomes)
    GLMKIT_FILTER(GLMKIT_CALL.out.elements)

    // fan-out: embed --shard K/N, then one merge that reuses every share's rows
    shards = Channel.of(1..params.embed_shards).map { k -> "${k}/${params.embed_shards}" }
    GLMKIT_EMBED(GLMKIT_FILTER.out.elements.combine(shards), params.plm)
    GLMKIT_EMBED_MERGE(GLMKIT_FILTER.out.elements.join(GLMKIT_EMBED.out.embeddings.groupTuple()))

    GLMKIT_PRETRAIN(GLMKIT_FILTER.out.elements.join(GLMKIT_EMBED_MERGE.out.embeddings))
    GLMKIT_CONTEXTUALIZE(GLMKIT_FILTER.out.elements.join(GLMKIT_EMBED_MERGE.out.embeddings)
                         .join(GLMKIT_PRETRAIN.out.model))

    // SemDeDup: one fit, N assignment shares, M prune shares over all of them, one merge
    GLMKIT_DEDUP_FIT(GLMKIT_CONTEXTUALIZE.out.context)
    assign_shards = Channel.of(1..params.dedup_assign_shards).map { k -> "${k}/${params.dedup_assign_shards}" }
    GLMKIT_DEDUP_ASSIGN(GLMKIT_CONTEXTUALIZE.out.context.join(GLMKIT_DEDUP_FIT.out.centroids).combine(assign_shards))
    prune_shards = Channel.of(1..params.dedup_prune_shards).map { k -> "${k}/${params.dedup_prune_shards}" }
    GLMKIT_DEDUP_PRUNE(GLMKIT_DEDUP_ASSIGN.out.share.groupTuple().join(GLMKIT_DEDUP_FIT.out.centroids)
                       .combine(prune_shards))
    GLMKIT_DEDUP_MERGE(GLMKIT_DEDUP_PRUNE.out.share.groupTuple())
}
