// nf-core style module: glmkit embed
process GLMKIT_EMBED {
    tag "$meta.id"
    label 'process_gpu'
    container "${ params.glmkit_container ?: 'glmkit:latest' }"

    input:
    tuple val(meta), path(elements), val(shard)
    val plm

    output:
    tuple val(meta), path("${prefix}.embeddings.zarr"), emit: embeddings
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    glmkit embed ${elements} -o ${prefix}.embeddings.zarr --model ${plm} ${shard ? "--shard " + shard : ""} --threads ${task.cpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir ${prefix}.embeddings.zarr

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """
}
