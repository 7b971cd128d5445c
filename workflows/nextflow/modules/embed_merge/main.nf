// nf-core style module: glmkit embed merge
process GLMKIT_EMBED_MERGE {
    tag "$meta.id"
    label 'process_low'
    container "${ params.glmkit_container ?: 'glmkit:latest' }"

    input:
    tuple val(meta), path(elements), path(shards)

    output:
    tuple val(meta), path("${prefix}.embeddings.zarr"), emit: embeddings
    tuple val(meta), path("${prefix}.genes.tsv"), emit: map
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    glmkit embed ${elements} ${shards} -o ${prefix}.embeddings.zarr --map ${prefix}.genes.tsv --threads ${task.cpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir ${prefix}.embeddings.zarr && touch ${prefix}.genes.tsv

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """
}
