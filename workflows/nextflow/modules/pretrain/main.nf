// nf-core style module: glmkit pretrain
process GLMKIT_PRETRAIN {
    tag "$meta.id"
    label 'process_gpu'
    container "${ params.glmkit_container ?: 'glmkit:latest' }"

    input:
    tuple val(meta), path(elements), path(embeddings)

    output:
    tuple val(meta), path("${prefix}.glm"), emit: model
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    glmkit pretrain ${elements} -e ${embeddings} -o ${prefix}.glm --threads ${task.cpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir ${prefix}.glm

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """
}
