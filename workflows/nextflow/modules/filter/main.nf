// nf-core style module: glmkit filter
process GLMKIT_FILTER {
    tag "$meta.id"
    label 'process_low'
    container "${ params.glmkit_container ?: 'glmkit:latest' }"

    input:
    tuple val(meta), path(elements)

    output:
    tuple val(meta), path("${prefix}.subcontigs.zarr"), emit: elements
    tuple val(meta), path("${prefix}.filter.tsv"), emit: report
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    glmkit filter ${elements} -o ${prefix}.subcontigs.zarr --report ${prefix}.filter.tsv ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir ${prefix}.subcontigs.zarr && touch ${prefix}.filter.tsv

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """
}
