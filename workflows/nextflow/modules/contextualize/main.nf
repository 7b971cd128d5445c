// nf-core style module: glmkit contextualize
process GLMKIT_CONTEXTUALIZE {
    tag "$meta.id"
    label 'process_gpu'
    container "${ params.glmkit_container ?: 'glmkit:latest' }"

    input:
    tuple val(meta), path(elements), path(embeddings), path(model)

    output:
    tuple val(meta), path("${prefix}.context.zarr"), emit: context
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    glmkit contextualize ${elements} -e ${embeddings} -m ${model} -o ${prefix}.context.zarr --threads ${task.cpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir ${prefix}.context.zarr

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """
}
