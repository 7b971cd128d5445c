// nf-core style module: glmkit dedup merge
process GLMKIT_DEDUP_MERGE {
    tag "$meta.id"
    label 'process_low'
    container "${ params.glmkit_container ?: 'glmkit:latest' }"

    input:
    tuple val(meta), path(shares)

    output:
    tuple val(meta), path("${prefix}.dedup"), emit: result
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    glmkit dedup merge ${shares} -o ${prefix}.dedup ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir ${prefix}.dedup

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """
}
